//! Thin handlers, one file per resource, and the OpenAPI document they make.

pub mod alerts;
pub mod auth;
pub mod checkins;
pub mod coverage;
pub mod device_keys;
pub mod events;
pub mod kiosks;
pub mod members;
pub mod ops;
pub mod osmand;
pub mod positions;
pub mod posts;
pub mod reports;
pub mod rosters;
pub mod shifts;
pub mod teams;
pub mod units;

use utoipa::{
    Modify, OpenApi,
    openapi::{
        ContentBuilder, Ref, ResponseBuilder,
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};
use utoipa_axum::router::OpenApiRouter;

use crate::{error::PROBLEM_JSON, state::AppState};

/// The fixed parts of the OpenAPI document; paths come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "patrol",
        description = "Patrol check-ins and duty coverage for a city district: organisation, accounts, \
                       posts, rosters, GPS check-ins, coverage, alerts and live events. Errors are RFC 9457 problem+json \
                       documents with a stable `code`.",
        license(name = "MIT", identifier = "MIT"),
    ),
    components(schemas(
        crate::error::Problem,
        crate::error::FieldError,
        crate::routes::positions::TrackFormat
    )),
    modifiers(&CommonParts),
)]
pub struct ApiDoc;

struct CommonParts;

impl Modify for CommonParts {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        // A kiosk device's token is no JWT and opens only the device's endpoints.
        components.add_security_scheme(
            "kiosk",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`Kiosk <token>`, the token `POST /kiosks` answered once",
            ))),
        );
    }
}

/// Adds the client-error answer every operation can give, so that each handler lists
/// only what it answers on success and its particular errors.
fn add_problem_responses(openapi: &mut utoipa::openapi::OpenApi) {
    let problem = ResponseBuilder::new()
        .description("A client error, as problem+json naming the problem (see `code` and `errors`)")
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build();
    for item in openapi.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            op.responses
                .responses
                .entry("4XX".to_owned())
                .or_insert_with(|| problem.clone().into());
        }
    }
}

/// The router with its OpenAPI document.
pub fn router() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let api = OpenApiRouter::new()
        .merge(auth::router())
        .merge(units::router())
        .merge(members::router())
        .merge(teams::router())
        .merge(posts::router())
        .merge(shifts::router())
        .merge(rosters::router())
        .merge(checkins::router())
        .merge(positions::list_router())
        .merge(positions::router())
        .merge(device_keys::router())
        .merge(kiosks::router())
        .merge(coverage::router())
        .merge(reports::router())
        .merge(alerts::router())
        .merge(events::router())
        .routes(utoipa_axum::routes!(ops::openapi_json));
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", api)
        .merge(ops::router())
        .merge(osmand::router())
        .split_for_parts();
    add_problem_responses(&mut openapi);
    (router, openapi)
}

/// The OpenAPI document the server serves (and `api-spec/openapi.json` holds).
pub fn openapi() -> utoipa::openapi::OpenApi {
    router().1
}
