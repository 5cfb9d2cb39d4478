//! Command-line administration: `patrol user add`.

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
