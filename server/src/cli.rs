//! Command-line administration: `patrol user add`, `patrol import posts`.

use anyhow::{Context, bail};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::{
    auth::Role,
    error::Violations,
    routes::members::{CreateMember, create_member_record},
    state::AppState,
    store::unit,
    validate,
};

/// Creates a member from the command line.
pub async fn add_user(
    state: &AppState,
    username: &str,
    role: &str,
    unit_code: Option<&str>,
    display_name: Option<&str>,
    password: String,
) -> anyhow::Result<uuid::Uuid> {
    let role = Role::parse(role).with_context(|| {
        format!(
            "unknown role {role:?}; use one of {}",
            Role::ALL.map(Role::as_str).join(", ")
        )
    })?;
    let unit_id = match unit_code {
        Some(code) => Some(
            unit::Entity::find()
                .filter(unit::Column::Code.eq(code))
                .one(&state.db)
                .await?
                .with_context(|| format!("no unit with code {code:?}"))?
                .id,
        ),
        None => None,
    };
    if unit_id.is_none() && role != Role::Admin {
        bail!("--unit is required for every role but admin");
    }
    let mut errors = Violations::new();
    validate::username(&mut errors, "USERNAME", username);
    validate::password(&mut errors, "password", &password);
    if let Some(name) = display_name {
        validate::name(&mut errors, "--display-name", name);
    }
    if let Err(e) = errors.finish() {
        bail!("{}", problem_text(e));
    }
    let created = create_member_record(
        state,
        CreateMember {
            username: username.to_owned(),
            display_name: display_name.map(str::to_owned),
            role,
            unit_id,
            active: Some(true),
            password,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!(problem_text(e)))?;
    Ok(created.id)
}

fn problem_text(e: crate::error::ApiError) -> String {
    e.to_string()
}

/// Imports posts from a GeoJSON file with a progress bar, as an admin would.
pub async fn import_posts(
    state: &AppState,
    file: &std::path::Path,
    datum: Option<&str>,
) -> anyhow::Result<crate::routes::posts::ImportReport> {
    let datum = match datum {
        Some(d) => Some(
            serde_json::from_value::<crate::domain::datum::Datum>(serde_json::Value::String(
                d.to_owned(),
            ))
            .map_err(|_| anyhow::anyhow!("--datum must be wgs84, gcj02 or bd09, not {d:?}"))?,
        ),
        None => None,
    };
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let collection: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let total = collection["features"].as_array().map_or(0, Vec::len) as u64;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} features {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = crate::routes::posts::import_collection(
        state,
        &crate::auth::Scope::All,
        &collection,
        datum,
        |done| bar.set_position(done as u64),
    )
    .await
    .map_err(|e| anyhow::anyhow!(problem_text(e)))?;
    bar.finish_and_clear();
    Ok(report)
}
