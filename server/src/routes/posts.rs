//! `/posts`: routes, checkpoints, kiosks and volunteer areas, with their requirements.
//! Commanders manage the posts of their subtree; officers see theirs through `/me/shifts`.

use std::collections::HashMap;

use axum::{extract::State, http::StatusCode};
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, sea_query::Query,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::{AuthUser, Scope},
    domain::{
        datum::Datum,
        geometry::{PostGeometry, PostKind},
    },
    error::{ApiError, ApiResult, FieldError, Violations},
    extract::{ApiJson, ApiPath, ApiQuery},
    pagination::{Page, PageRequest},
    routes::units::referenced_unit,
    state::AppState,
    store::{post, shift, unit},
    validate,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_posts, create_post))
        .routes(routes!(posts_geojson))
        .routes(routes!(import_posts))
        .routes(routes!(get_post, patch_post, delete_post))
}

/// Whether a post must be staffed round the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Staffing {
    /// Must be rostered every minute; roster gaps are reported.
    #[serde(rename = "24x7")]
    RoundTheClock,
    /// Staffed when a shift says so.
    #[serde(rename = "rostered")]
    Rostered,
}

impl Staffing {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Staffing::RoundTheClock => "24x7",
            Staffing::Rostered => "rostered",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Staffing {
        if s == "24x7" {
            Staffing::RoundTheClock
        } else {
            Staffing::Rostered
        }
    }

    fn default_for(kind: PostKind) -> Staffing {
        match kind {
            PostKind::Checkpoint | PostKind::Kiosk => Staffing::RoundTheClock,
            PostKind::Route | PostKind::Area => Staffing::Rostered,
        }
    }
}

/// A post.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct Post {
    /// Id.
    pub id: Uuid,
    /// Unique code, e.g. `R01`, `C03`, `K17`.
    pub code: String,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: PostKind,
    /// Unit responsible for the post.
    pub unit_id: Uuid,
    /// GeoJSON geometry in WGS-84 (`[lon, lat]`).
    #[schema(value_type = Object)]
    pub geometry: Value,
    /// Routes: length along the route in metres.
    pub length_m: Option<f64>,
    /// Routes: a point of the route is covered when a track comes this close (metres).
    pub corridor_m: Option<f64>,
    /// Checkpoints, kiosks, areas: a fix this close counts as at the post (metres).
    pub radius_m: Option<f64>,
    /// People required at once.
    pub min_headcount: i32,
    /// Routes: share of the length that must be covered in a shift (0–1).
    pub required_coverage: Option<f64>,
    /// Other posts: share of the shift that must be staffed (0–1).
    pub required_presence: Option<f64>,
    /// Minutes after a shift starts within which the post must be staffed.
    pub arrival_grace_min: i32,
    /// `24x7` or `rostered`.
    pub staffing: Staffing,
    /// When created.
    pub created_at: chrono::DateTime<Utc>,
    /// When last changed.
    pub updated_at: chrono::DateTime<Utc>,
}

impl From<post::Model> for Post {
    fn from(p: post::Model) -> Self {
        Post {
            id: p.id,
            kind: PostKind::parse(&p.kind).unwrap_or(PostKind::Kiosk),
            geometry: serde_json::from_str(&p.geometry).unwrap_or(Value::Null),
            code: p.code,
            name: p.name,
            unit_id: p.unit_id,
            length_m: p.length_m,
            corridor_m: p.corridor_m,
            radius_m: p.radius_m,
            min_headcount: p.min_headcount,
            required_coverage: p.required_coverage,
            required_presence: p.required_presence,
            arrival_grace_min: p.arrival_grace_min,
            staffing: Staffing::parse(&p.staffing),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// A new post. Requirement fields left out take their defaults: `corridor_m` 30,
/// `radius_m` 50, `min_headcount` 1, `required_coverage` 0.8, `required_presence` 0.9,
/// `arrival_grace_min` 15, `staffing` `24x7` for checkpoints and kiosks, else `rostered`.
#[derive(Deserialize, ToSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct CreatePost {
    /// Unique code.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[A-Za-z0-9._-]{1,64}$",
        example = "R01"
    )]
    pub code: String,
    /// Name: not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
    /// Kind; the geometry must fit it.
    pub kind: PostKind,
    /// Unit (inside the caller's scope).
    pub unit_id: Uuid,
    /// GeoJSON geometry: LineString/MultiLineString for routes, Point for checkpoints and
    /// kiosks, Polygon/MultiPolygon for areas; at most 10,000 positions.
    #[schema(value_type = GeoJsonGeometry)]
    pub geometry: Value,
    /// Datum of the geometry (`wgs84` default, `gcj02`, `bd09`); stored converted to WGS-84.
    #[schema(value_type = Option<Datum>, example = "gcj02")]
    pub datum: Option<Datum>,
    /// Routes only, metres.
    #[schema(exclusive_minimum = 0.0, maximum = 1000.0)]
    pub corridor_m: Option<f64>,
    /// Checkpoints, kiosks and areas only, metres.
    #[schema(exclusive_minimum = 0.0, maximum = 5000.0)]
    pub radius_m: Option<f64>,
    /// 1–1000.
    #[schema(minimum = 1, maximum = 1000)]
    pub min_headcount: Option<i32>,
    /// Routes only, in (0, 1].
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub required_coverage: Option<f64>,
    /// Checkpoints, kiosks and areas only, in (0, 1].
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub required_presence: Option<f64>,
    /// 0–1440.
    #[schema(minimum = 0, maximum = 1440)]
    pub arrival_grace_min: Option<i32>,
    /// `24x7` or `rostered`.
    pub staffing: Option<Staffing>,
}

/// Changes to a post; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchPost {
    /// Unique code.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub code: Option<String>,
    /// Name: not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: Option<String>,
    /// Kind; the (new or stored) geometry must fit it.
    pub kind: Option<PostKind>,
    /// Unit.
    pub unit_id: Option<Uuid>,
    /// New geometry.
    #[schema(value_type = Option<GeoJsonGeometry>)]
    pub geometry: Option<Value>,
    /// Datum of the new geometry; only together with `geometry`.
    #[schema(value_type = Option<Datum>)]
    pub datum: Option<Datum>,
    /// Routes only, metres.
    #[schema(exclusive_minimum = 0.0, maximum = 1000.0)]
    pub corridor_m: Option<f64>,
    /// Other kinds only, metres.
    #[schema(exclusive_minimum = 0.0, maximum = 5000.0)]
    pub radius_m: Option<f64>,
    /// 1–1000.
    #[schema(minimum = 1, maximum = 1000)]
    pub min_headcount: Option<i32>,
    /// Routes only, in (0, 1].
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub required_coverage: Option<f64>,
    /// Other kinds only, in (0, 1].
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub required_presence: Option<f64>,
    /// 0–1440.
    #[schema(minimum = 0, maximum = 1440)]
    pub arrival_grace_min: Option<i32>,
    /// `24x7` or `rostered`.
    pub staffing: Option<Staffing>,
}

/// The OpenAPI schema of a post's GeoJSON geometry (the handlers read it as JSON and check
/// it in [`PostGeometry::parse`]): a Point, LineString, MultiLineString, Polygon or
/// MultiPolygon whose positions are `[lon, lat]` or `[lon, lat, altitude]`.
pub struct GeoJsonGeometry;

impl utoipa::ToSchema for GeoJsonGeometry {
    fn name() -> std::borrow::Cow<'static, str> {
        "GeoJsonGeometry".into()
    }
}

impl utoipa::PartialSchema for GeoJsonGeometry {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType,
            Type,
        };
        let number = |lo: f64, hi: f64| {
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .minimum(Some(lo))
                .maximum(Some(hi))
                .build()
        };
        let position: Schema = ArrayBuilder::new()
            .prefix_items([number(-180.0, 180.0), number(-90.0, 90.0)])
            .items(ObjectBuilder::new().schema_type(Type::Number))
            .min_items(Some(2))
            .max_items(Some(3))
            .description(Some("[lon, lat], optionally an altitude, which is ignored"))
            .into();
        let list = |of: Schema, min: usize| -> Schema {
            ArrayBuilder::new()
                .items(utoipa::openapi::RefOr::T(of))
                .min_items(Some(min))
                .max_items(Some(crate::domain::geometry::MAX_VERTICES))
                .into()
        };
        let line = list(position.clone(), 2);
        let ring = list(position.clone(), 4);
        let polygon = list(ring, 1);
        let shapes = [
            ("Point", position),
            ("LineString", line.clone()),
            ("MultiLineString", list(line, 1)),
            ("Polygon", polygon.clone()),
            ("MultiPolygon", list(polygon, 1)),
        ];
        let mut one_of = OneOfBuilder::new().description(Some(
            "GeoJSON geometry; its type must fit the post's kind (routes: LineString or \
             MultiLineString; checkpoints and kiosks: Point; areas: Polygon or MultiPolygon)",
        ));
        for (name, coordinates) in shapes {
            one_of = one_of.item(
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::Object))
                    .property(
                        "type",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .enum_values(Some([name])),
                    )
                    .property("coordinates", coordinates)
                    .property(
                        "bbox",
                        ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::Number)),
                    )
                    .required("type")
                    .required("coordinates")
                    .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false))),
            );
        }
        one_of.into()
    }
}

/// Filters and paging of `GET /posts`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PostQuery {
    /// Page size, 1–1000 (default 100).
    pub limit: Option<i64>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Only posts of this kind.
    pub kind: Option<PostKind>,
    /// Only posts of this unit (not its sub-units).
    pub unit_id: Option<Uuid>,
}

/// The requirement fields, resolved and checked for a kind.
struct Requirements {
    corridor_m: Option<f64>,
    radius_m: Option<f64>,
    min_headcount: i32,
    required_coverage: Option<f64>,
    required_presence: Option<f64>,
    arrival_grace_min: i32,
    staffing: Staffing,
}

/// The requirement fields as given (create) or as they would be after a change (patch).
#[derive(Default, Clone, Copy)]
struct GivenRequirements {
    corridor_m: Option<f64>,
    radius_m: Option<f64>,
    min_headcount: Option<i32>,
    required_coverage: Option<f64>,
    required_presence: Option<f64>,
    arrival_grace_min: Option<i32>,
    staffing: Option<Staffing>,
}

fn requirements(kind: PostKind, given: GivenRequirements, errors: &mut Violations) -> Requirements {
    let route = kind == PostKind::Route;
    let in_range = |v: f64, lo: f64, hi: f64| v.is_finite() && v > lo && v <= hi;
    if let Some(v) = given.corridor_m {
        errors.check(!route, "corridor_m", "applies to routes only");
        errors.check(
            !in_range(v, 0.0, 1000.0),
            "corridor_m",
            "must be above 0 and at most 1000 metres",
        );
    }
    if let Some(v) = given.radius_m {
        errors.check(
            route,
            "radius_m",
            "applies to checkpoints, kiosks and areas only",
        );
        errors.check(
            !in_range(v, 0.0, 5000.0),
            "radius_m",
            "must be above 0 and at most 5000 metres",
        );
    }
    if let Some(v) = given.required_coverage {
        errors.check(!route, "required_coverage", "applies to routes only");
        errors.check(
            !in_range(v, 0.0, 1.0),
            "required_coverage",
            "must be above 0 and at most 1",
        );
    }
    if let Some(v) = given.required_presence {
        errors.check(
            route,
            "required_presence",
            "applies to checkpoints, kiosks and areas only",
        );
        errors.check(
            !in_range(v, 0.0, 1.0),
            "required_presence",
            "must be above 0 and at most 1",
        );
    }
    if let Some(v) = given.min_headcount {
        errors.check(
            !(1..=1000).contains(&v),
            "min_headcount",
            "must be between 1 and 1000",
        );
    }
    if let Some(v) = given.arrival_grace_min {
        errors.check(
            !(0..=1440).contains(&v),
            "arrival_grace_min",
            "must be between 0 and 1440 minutes",
        );
    }
    Requirements {
        corridor_m: route.then(|| given.corridor_m.unwrap_or(30.0)),
        radius_m: (!route).then(|| given.radius_m.unwrap_or(50.0)),
        min_headcount: given.min_headcount.unwrap_or(1),
        required_coverage: route.then(|| given.required_coverage.unwrap_or(0.8)),
        required_presence: (!route).then(|| given.required_presence.unwrap_or(0.9)),
        arrival_grace_min: given.arrival_grace_min.unwrap_or(15),
        staffing: given.staffing.unwrap_or(Staffing::default_for(kind)),
    }
}

/// Reads a geometry for a kind, recording field errors under `field`.
fn geometry(
    kind: PostKind,
    value: &Value,
    datum: Option<Datum>,
    field: &str,
    errors: &mut Violations,
) -> Option<PostGeometry> {
    match PostGeometry::parse(kind, value, datum.unwrap_or(Datum::Wgs84)) {
        Ok(g) => Some(g),
        Err(problems) => {
            for p in problems {
                let path = if p.path.is_empty() {
                    field.to_owned()
                } else {
                    format!("{field}.{}", p.path)
                };
                errors.add(path, p.message);
            }
            None
        }
    }
}

fn apply_geometry(active: &mut post::ActiveModel, g: &PostGeometry) {
    let [min_lon, min_lat, max_lon, max_lat] = g.bbox();
    active.geometry = Set(g.to_geojson().to_string());
    active.length_m = Set(g.length_m());
    active.min_lon = Set(min_lon);
    active.min_lat = Set(min_lat);
    active.max_lon = Set(max_lon);
    active.max_lat = Set(max_lat);
}

fn apply_requirements(active: &mut post::ActiveModel, r: &Requirements) {
    active.corridor_m = Set(r.corridor_m);
    active.radius_m = Set(r.radius_m);
    active.min_headcount = Set(r.min_headcount);
    active.required_coverage = Set(r.required_coverage);
    active.required_presence = Set(r.required_presence);
    active.arrival_grace_min = Set(r.arrival_grace_min);
    active.staffing = Set(r.staffing.as_str().to_owned());
}

/// A condition selecting the posts of units inside a scope.
pub fn post_scope_condition(scope: &Scope) -> sea_orm::Condition {
    match scope {
        Scope::All => sea_orm::Condition::all(),
        Scope::Subtree(prefix) => sea_orm::Condition::all().add(
            post::Column::UnitId.in_subquery(
                Query::select()
                    .column(unit::Column::Id)
                    .from(unit::Entity)
                    .and_where(unit::Column::Path.starts_with(prefix.clone()))
                    .to_owned(),
            ),
        ),
        Scope::Nothing => sea_orm::Condition::all().add(post::Column::Id.is_null()),
    }
}

/// These posts by id (those that exist), whatever the caller's scope: for answers about
/// shifts the caller was already allowed to read.
pub async fn posts_by_id<C: ConnectionTrait>(
    db: &C,
    ids: impl IntoIterator<Item = Uuid>,
) -> ApiResult<HashMap<Uuid, post::Model>> {
    Ok(crate::store::by_ids::<post::Entity, _>(db, post::Column::Id, |p| p.id, ids).await?)
}

/// Finds a post the caller may see, or answers 404.
pub async fn post_in_scope(state: &AppState, user: &AuthUser, id: Uuid) -> ApiResult<post::Model> {
    post::Entity::find_by_id(id)
        .filter(post_scope_condition(&user.scope_prefix()))
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no post {id}")))
}

async fn code_owner<C: ConnectionTrait>(db: &C, code: &str) -> ApiResult<Option<post::Model>> {
    Ok(post::Entity::find()
        .filter(post::Column::Code.eq(code))
        .one(db)
        .await?)
}

/// Lists the posts the caller may see.
#[utoipa::path(get, path = "/posts", tag = "posts", security(("bearer" = [])), params(PostQuery),
    responses((status = 200, description = "A page of posts", body = Page<Post>)))]
pub async fn list_posts(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<PostQuery>,
) -> ApiResult<axum::Json<Page<Post>>> {
    user.require_manager()?;
    let page = PageRequest::from_query(q.limit, q.cursor.as_deref())?;
    let mut query = post::Entity::find()
        .filter(post_scope_condition(&user.scope_prefix()))
        .order_by_asc(post::Column::Id);
    if let Some(after) = page.after {
        query = query.filter(post::Column::Id.gt(after));
    }
    if let Some(kind) = q.kind {
        query = query.filter(post::Column::Kind.eq(kind.as_str()));
    }
    if let Some(unit_id) = q.unit_id {
        query = query.filter(post::Column::UnitId.eq(unit_id));
    }
    let rows = query.limit(page.fetch()).all(&state.db).await?;
    Ok(axum::Json(page.finish(rows, |p| p.id, Post::from)))
}

/// Creates a post.
#[utoipa::path(post, path = "/posts", tag = "posts", security(("bearer" = [])), request_body = CreatePost,
    responses(
        (status = 201, description = "Created", body = Post),
        (status = 409, description = "The code is taken", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_post(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<CreatePost>,
) -> ApiResult<(StatusCode, axum::Json<Post>)> {
    user.require_manager()?;
    let mut errors = Violations::new();
    validate::code(&mut errors, "code", &req.code);
    validate::name(&mut errors, "name", &req.name);
    referenced_unit(&state, &user, req.unit_id, "unit_id", &mut errors).await?;
    let g = geometry(req.kind, &req.geometry, req.datum, "geometry", &mut errors);
    let r = requirements(req.kind, given_of_create(&req), &mut errors);
    errors.finish()?;
    let g = g.ok_or_else(|| ApiError::internal("geometry checked but missing"))?;
    if code_owner(&state.db, &req.code).await?.is_some() {
        return Err(ApiError::conflict(format!(
            "post code {:?} is already taken",
            req.code
        )));
    }
    let model = insert_post(&state.db, &req, &g, &r).await?;
    Ok((StatusCode::CREATED, axum::Json(model.into())))
}

fn given_of_create(req: &CreatePost) -> GivenRequirements {
    GivenRequirements {
        corridor_m: req.corridor_m,
        radius_m: req.radius_m,
        min_headcount: req.min_headcount,
        required_coverage: req.required_coverage,
        required_presence: req.required_presence,
        arrival_grace_min: req.arrival_grace_min,
        staffing: req.staffing,
    }
}

async fn insert_post<C: ConnectionTrait>(
    db: &C,
    req: &CreatePost,
    g: &PostGeometry,
    r: &Requirements,
) -> ApiResult<post::Model> {
    let now = Utc::now();
    let mut active = post::ActiveModel {
        id: Set(Uuid::now_v7()),
        code: Set(req.code.clone()),
        name: Set(req.name.clone()),
        kind: Set(req.kind.as_str().to_owned()),
        unit_id: Set(req.unit_id),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    };
    apply_geometry(&mut active, g);
    apply_requirements(&mut active, r);
    Ok(active.insert(db).await?)
}

/// One post.
#[utoipa::path(get, path = "/posts/{id}", tag = "posts", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Post id")),
    responses((status = 200, description = "The post", body = Post)))]
pub async fn get_post(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<Post>> {
    user.require_manager()?;
    Ok(axum::Json(post_in_scope(&state, &user, id).await?.into()))
}

/// Changes a post. Requirement fields that do not apply to a new kind are reset to that
/// kind's defaults.
#[utoipa::path(patch, path = "/posts/{id}", tag = "posts", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Post id")), request_body = PatchPost,
    responses((status = 200, description = "The changed post", body = Post)))]
pub async fn patch_post(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<PatchPost>,
) -> ApiResult<axum::Json<Post>> {
    user.require_manager()?;
    let current = post_in_scope(&state, &user, id).await?;
    let mut errors = Violations::new();
    if let Some(code) = &req.code {
        validate::code(&mut errors, "code", code);
    }
    if let Some(name) = &req.name {
        validate::name(&mut errors, "name", name);
    }
    if let Some(unit_id) = req.unit_id {
        referenced_unit(&state, &user, unit_id, "unit_id", &mut errors).await?;
    }
    let old_kind = PostKind::parse(&current.kind).unwrap_or(PostKind::Kiosk);
    let kind = req.kind.unwrap_or(old_kind);
    let new_geometry = match &req.geometry {
        Some(v) => geometry(kind, v, req.datum, "geometry", &mut errors),
        None => {
            errors.check(
                req.datum.is_some(),
                "datum",
                "applies only together with a new geometry",
            );
            if kind != old_kind {
                let stored: Value = serde_json::from_str(&current.geometry).unwrap_or(Value::Null);
                geometry(kind, &stored, None, "geometry", &mut errors);
            }
            None
        }
    };
    // Keep stored values that still apply to the kind; take the changes; default the rest.
    let keep = |v: Option<f64>| if kind == old_kind { v } else { None };
    let given = GivenRequirements {
        corridor_m: req.corridor_m.or(keep(current.corridor_m)),
        radius_m: req.radius_m.or(keep(current.radius_m)),
        min_headcount: Some(req.min_headcount.unwrap_or(current.min_headcount)),
        required_coverage: req.required_coverage.or(keep(current.required_coverage)),
        required_presence: req.required_presence.or(keep(current.required_presence)),
        arrival_grace_min: Some(req.arrival_grace_min.unwrap_or(current.arrival_grace_min)),
        staffing: Some(req.staffing.unwrap_or(if kind == old_kind {
            Staffing::parse(&current.staffing)
        } else {
            Staffing::default_for(kind)
        })),
    };
    let r = requirements(kind, given, &mut errors);
    errors.finish()?;
    if let Some(code) = &req.code
        && code_owner(&state.db, code)
            .await?
            .is_some_and(|p| p.id != id)
    {
        return Err(ApiError::conflict(format!(
            "post code {code:?} is already taken"
        )));
    }
    let mut active = current.into_active_model();
    if let Some(code) = req.code {
        active.code = Set(code);
    }
    if let Some(name) = req.name {
        active.name = Set(name);
    }
    if let Some(unit_id) = req.unit_id {
        active.unit_id = Set(unit_id);
    }
    active.kind = Set(kind.as_str().to_owned());
    if let Some(g) = &new_geometry {
        apply_geometry(&mut active, g);
    }
    apply_requirements(&mut active, &r);
    active.updated_at = Set(Utc::now());
    let updated = update_post(&state, id, active).await?;
    Ok(axum::Json(updated.into()))
}

/// Deletes a post that no shift refers to.
#[utoipa::path(delete, path = "/posts/{id}", tag = "posts", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Post id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "Shifts still refer to the post", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_post(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    user.require_manager()?;
    post_in_scope(&state, &user, id).await?;
    let shifts = shift::Entity::find()
        .filter(shift::Column::PostId.eq(id))
        .count(&state.db)
        .await?;
    if shifts > 0 {
        return Err(ApiError::conflict(format!(
            "{shifts} shifts still refer to this post; delete them first"
        )));
    }
    post::Entity::delete_by_id(id).exec(&state.db).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Filters of `GET /posts/geojson`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GeoJsonQuery {
    /// Only posts of this kind.
    pub kind: Option<PostKind>,
}

/// Every post the caller may see, as a GeoJSON FeatureCollection (properties: the post's
/// fields without the geometry).
#[utoipa::path(get, path = "/posts/geojson", tag = "posts", security(("bearer" = [])), params(GeoJsonQuery),
    responses((status = 200, description = "A FeatureCollection", body = Object, content_type = "application/geo+json")))]
pub async fn posts_geojson(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<GeoJsonQuery>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    user.require_manager()?;
    let mut query = post::Entity::find()
        .filter(post_scope_condition(&user.scope_prefix()))
        .order_by_asc(post::Column::Code);
    if let Some(kind) = q.kind {
        query = query.filter(post::Column::Kind.eq(kind.as_str()));
    }
    let features: Vec<Value> = query
        .all(&state.db)
        .await?
        .into_iter()
        .map(|p| {
            let post = Post::from(p);
            let geometry = post.geometry.clone();
            let mut properties = serde_json::to_value(&post).unwrap_or(Value::Null);
            if let Some(obj) = properties.as_object_mut() {
                obj.remove("geometry");
            }
            json!({"type": "Feature", "id": post.id, "geometry": geometry, "properties": properties})
        })
        .collect();
    let body = json!({"type": "FeatureCollection", "features": features});
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/geo+json")],
        axum::Json(body),
    )
        .into_response())
}

/// What happened to one feature of an import.
#[derive(Serialize, ToSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ImportStatus {
    /// A new post.
    Created,
    /// An existing post with the same code, changed.
    Updated,
    /// Nothing stored; see `errors`.
    Rejected,
}

/// The outcome of one feature.
#[derive(Serialize, ToSchema, Debug, Clone)]
pub struct ImportResult {
    /// Position of the feature in the collection.
    pub index: usize,
    /// The feature's `code` property, when it had one.
    pub code: Option<String>,
    /// What happened.
    pub status: ImportStatus,
    /// The post's id, unless rejected.
    pub id: Option<Uuid>,
    /// Why it was rejected: fields below the feature, e.g. `properties.kind`.
    pub errors: Vec<FieldError>,
}

/// The outcome of an import.
#[derive(Serialize, ToSchema, Debug, Default)]
pub struct ImportReport {
    /// Posts created.
    pub created: usize,
    /// Posts updated.
    pub updated: usize,
    /// Features rejected.
    pub rejected: usize,
    /// One result per feature, in input order.
    pub results: Vec<ImportResult>,
}

/// Most features one import takes.
pub const MAX_IMPORT_FEATURES: usize = 10_000;

/// The feature properties an import reads.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeatureProperties {
    code: String,
    name: String,
    kind: PostKind,
    unit: String,
    datum: Option<Datum>,
    corridor_m: Option<f64>,
    radius_m: Option<f64>,
    min_headcount: Option<i32>,
    required_coverage: Option<f64>,
    required_presence: Option<f64>,
    arrival_grace_min: Option<i32>,
    staffing: Option<Staffing>,
    // Properties that GeoJSON exports of our own posts carry; ignored on import.
    #[serde(default, rename = "id")]
    _id: Option<Value>,
    #[serde(default, rename = "unit_id")]
    _unit_id: Option<Value>,
    #[serde(default, rename = "length_m")]
    _length_m: Option<Value>,
    #[serde(default, rename = "created_at")]
    _created_at: Option<Value>,
    #[serde(default, rename = "updated_at")]
    _updated_at: Option<Value>,
}

/// Upserts posts by `code` from a FeatureCollection, within a scope. One bad feature never
/// stops the others; `progress` is told how many features are done.
pub async fn import_collection(
    state: &AppState,
    scope: &Scope,
    collection: &Value,
    default_datum: Option<Datum>,
    mut progress: impl FnMut(usize),
) -> ApiResult<ImportReport> {
    let features = match (
        collection.get("type").and_then(Value::as_str),
        collection.get("features"),
    ) {
        (Some("FeatureCollection"), Some(Value::Array(f))) => f,
        _ => {
            return Err(ApiError::field(
                "body",
                "must be a GeoJSON FeatureCollection with a features array",
            ));
        }
    };
    if features.len() > MAX_IMPORT_FEATURES {
        return Err(ApiError::field(
            "features",
            format!("at most {MAX_IMPORT_FEATURES} features in one import"),
        ));
    }
    let units: HashMap<String, unit::Model> = unit::Entity::find()
        .all(&state.db)
        .await?
        .into_iter()
        .filter(|u| scope.contains(&u.path))
        .map(|u| (u.code.clone(), u))
        .collect();
    let unit_of_post: HashMap<Uuid, String> = unit::Entity::find()
        .all(&state.db)
        .await?
        .into_iter()
        .map(|u| (u.id, u.path))
        .collect();
    let mut report = ImportReport::default();
    for (index, feature) in features.iter().enumerate() {
        let result =
            import_feature(state, scope, &units, &unit_of_post, feature, default_datum).await?;
        let result = match result {
            Ok((status, id, code)) => ImportResult {
                index,
                code: Some(code),
                status,
                id: Some(id),
                errors: Vec::new(),
            },
            Err(errors) => ImportResult {
                index,
                code: feature["properties"]["code"].as_str().map(str::to_owned),
                status: ImportStatus::Rejected,
                id: None,
                errors,
            },
        };
        match result.status {
            ImportStatus::Created => report.created += 1,
            ImportStatus::Updated => report.updated += 1,
            ImportStatus::Rejected => report.rejected += 1,
        }
        report.results.push(result);
        progress(index + 1);
    }
    Ok(report)
}

/// Writes a changed post and, in the same transaction, marks out of date the figures
/// stored for its shifts as it was (geometry and requirements decide them), then wakes the
/// updater to compute them again.
async fn update_post(
    state: &AppState,
    id: Uuid,
    active: post::ActiveModel,
) -> ApiResult<post::Model> {
    let txn = crate::db::begin_write(&state.db).await?;
    let updated = active.update(&txn).await?;
    crate::coverage::mark_stale_on(&txn, shift::Column::PostId, &[id]).await?;
    txn.commit().await?;
    state.coverage_wakeup.notify_one();
    Ok(updated)
}

type FeatureOutcome = Result<(ImportStatus, Uuid, String), Vec<FieldError>>;

async fn import_feature(
    state: &AppState,
    scope: &Scope,
    units: &HashMap<String, unit::Model>,
    unit_paths: &HashMap<Uuid, String>,
    feature: &Value,
    default_datum: Option<Datum>,
) -> ApiResult<FeatureOutcome> {
    let one = |field: &str, message: String| {
        Ok(Err(vec![FieldError {
            field: field.to_owned(),
            message,
        }]))
    };
    if feature.get("type").and_then(Value::as_str) != Some("Feature") {
        return one("type", "must be \"Feature\"".to_owned());
    }
    let props: FeatureProperties = match serde_path_to_error::deserialize(
        feature.get("properties").cloned().unwrap_or(Value::Null),
    ) {
        Ok(p) => p,
        Err(e) => {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            let field = match crate::extract::field_of(&path, &message).as_str() {
                "body" => "properties".to_owned(),
                inner => format!("properties.{inner}"),
            };
            return one(&field, message);
        }
    };
    let mut errors = Violations::new();
    validate::code(&mut errors, "properties.code", &props.code);
    validate::name(&mut errors, "properties.name", &props.name);
    let unit = units.get(&props.unit);
    if unit.is_none() {
        errors.add(
            "properties.unit",
            format!("no unit with code {:?} in your scope", props.unit),
        );
    }
    let g = geometry(
        props.kind,
        feature.get("geometry").unwrap_or(&Value::Null),
        props.datum.or(default_datum),
        "geometry",
        &mut errors,
    );
    let given = GivenRequirements {
        corridor_m: props.corridor_m,
        radius_m: props.radius_m,
        min_headcount: props.min_headcount,
        required_coverage: props.required_coverage,
        required_presence: props.required_presence,
        arrival_grace_min: props.arrival_grace_min,
        staffing: props.staffing,
    };
    let r = requirements(props.kind, given, &mut errors);
    let existing = code_owner(&state.db, &props.code).await?;
    if let Some(p) = &existing
        && !unit_paths
            .get(&p.unit_id)
            .is_some_and(|path| scope.contains(path))
    {
        errors.add("properties.code", "belongs to a post outside your scope");
    }
    if !errors.is_empty() {
        return Ok(Err(errors.into_field_errors()));
    }
    let (Some(g), Some(unit)) = (g, unit) else {
        return Err(ApiError::internal("import feature checked but incomplete"));
    };
    match existing {
        None => {
            let req = CreatePost {
                code: props.code.clone(),
                name: props.name,
                kind: props.kind,
                unit_id: unit.id,
                geometry: Value::Null,
                datum: None,
                corridor_m: None,
                radius_m: None,
                min_headcount: None,
                required_coverage: None,
                required_presence: None,
                arrival_grace_min: None,
                staffing: None,
            };
            let model = insert_post(&state.db, &req, &g, &r).await?;
            Ok(Ok((ImportStatus::Created, model.id, props.code)))
        }
        Some(p) => {
            let id = p.id;
            let mut active = p.into_active_model();
            active.name = Set(props.name);
            active.kind = Set(props.kind.as_str().to_owned());
            active.unit_id = Set(unit.id);
            apply_geometry(&mut active, &g);
            apply_requirements(&mut active, &r);
            active.updated_at = Set(Utc::now());
            update_post(state, id, active).await?;
            Ok(Ok((ImportStatus::Updated, id, props.code)))
        }
    }
}

/// Query of `POST /posts/import`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// Datum of features that do not name one in their properties (default `wgs84`).
    #[param(value_type = Option<String>)]
    pub datum: Option<Datum>,
}

/// Upserts posts by `code` from a GeoJSON FeatureCollection. Feature properties: `code`,
/// `name`, `kind`, `unit` (a unit code) and the optional requirement fields and `datum`.
/// Each feature is created, updated or rejected with its reasons; one bad feature does not
/// stop the rest.
#[utoipa::path(post, path = "/posts/import", tag = "posts", security(("bearer" = [])), params(ImportQuery),
    request_body(content = Object, description = "A GeoJSON FeatureCollection"),
    responses((status = 200, description = "Per-feature results", body = ImportReport)))]
pub async fn import_posts(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<ImportQuery>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<axum::Json<ImportReport>> {
    user.require_manager()?;
    let report = import_collection(&state, &user.scope_prefix(), &body, q.datum, |_| {}).await?;
    Ok(axum::Json(report))
}
