//! A small migration command for development: `migration [up|down|status|fresh]`,
//! against `PATROL_DATABASE_URL` (default `sqlite://patrol.db?mode=rwc`).
//! The service itself migrates at start and through `patrol migrate`.

use migration::{Migrator, MigratorTrait};
use sea_orm_migration::sea_orm::Database;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("PATROL_DATABASE_URL")
        .unwrap_or_else(|_| "sqlite://patrol.db?mode=rwc".to_owned());
    let db = Database::connect(&url).await?;
    match std::env::args().nth(1).as_deref().unwrap_or("up") {
        "up" => Migrator::up(&db, None).await?,
        "down" => Migrator::down(&db, Some(1)).await?,
        "status" => Migrator::status(&db).await?,
        "fresh" => Migrator::fresh(&db).await?,
        other => {
            return Err(format!("unknown command {other:?}; use up, down, status or fresh").into());
        }
    }
    Ok(())
}
