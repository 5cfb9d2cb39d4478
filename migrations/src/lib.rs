//! Database migrations of the patrol service; they run on SQLite and PostgreSQL alike, but
//! for the packed hours of fixes, which exist on SQLite only, and the indexes of fixes,
//! which on SQLite are by member only.

pub use sea_orm_migration::prelude::*;

mod m20261129_000001_foundation;
mod m20261129_000002_posts_and_shifts;
mod m20261129_000003_fixes;
mod m20261129_000004_shift_coverage;
mod m20261129_000005_alerts;
mod m20261129_000006_fixes_time_covering;
mod m20261130_000007_shifts_span_covering;
mod m20261206_000008_fix_packs;
mod m20261206_000009_fixes_by_member;
mod m20261207_000010_late_sos_and_resolutions;
mod m20261207_000011_shift_team_members;
mod m20261207_000012_recompute_negative_zeros;
mod m20261207_000013_kiosks;
mod m20261207_000014_login_failures_by_address;
mod m20261207_000015_coverage_generation;

/// Runs statements written for SQLite, on SQLite only (the migrations that exist there
/// alone).
async fn on_sqlite(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    if manager.get_database_backend() != sea_orm::DbBackend::Sqlite {
        return Ok(());
    }
    let db = manager.get_connection();
    for s in statements {
        db.execute_unprepared(s).await?;
    }
    Ok(())
}

/// Every migration of the service, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261129_000001_foundation::Migration),
            Box::new(m20261129_000002_posts_and_shifts::Migration),
            Box::new(m20261129_000003_fixes::Migration),
            Box::new(m20261129_000004_shift_coverage::Migration),
            Box::new(m20261129_000005_alerts::Migration),
            Box::new(m20261129_000006_fixes_time_covering::Migration),
            Box::new(m20261130_000007_shifts_span_covering::Migration),
            Box::new(m20261206_000008_fix_packs::Migration),
            Box::new(m20261206_000009_fixes_by_member::Migration),
            Box::new(m20261207_000010_late_sos_and_resolutions::Migration),
            Box::new(m20261207_000011_shift_team_members::Migration),
            Box::new(m20261207_000012_recompute_negative_zeros::Migration),
            Box::new(m20261207_000013_kiosks::Migration),
            Box::new(m20261207_000014_login_failures_by_address::Migration),
            Box::new(m20261207_000015_coverage_generation::Migration),
        ]
    }
}
