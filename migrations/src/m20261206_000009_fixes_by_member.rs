//! On SQLite, fixes are indexed by member first only: the index on `(member_id,
//! recorded_at)` carries the columns the coverage rule reads and takes the place of both
//! the index on time (`idx_fixes_recorded_coverage`) and the narrow one by member
//! (`idx_fixes_member_recorded`).
//!
//! The index on time put every fix of a phone uploading its queue between the fixes that
//! the other phones had sent for the same minutes, one leaf page each, and every page a
//! transaction dirties is written whole to the WAL: in a group of four 1,000-fix batches it
//! wrote two thirds of the WAL. Indexed by member, a batch lands on a few pages next to
//! each other. Reads by time go member by member (`member_id IN (SELECT id FROM members)`,
//! one range each), and past hours are read from their packs (`patrol_server::packs`).
//!
//! PostgreSQL keeps its indexes: there reads by time use the index on time.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "CREATE INDEX idx_fixes_member_coverage ON fixes \
     (member_id, recorded_at, lat, lon, accuracy_m, flags)",
    "DROP INDEX idx_fixes_member_recorded",
    "DROP INDEX idx_fixes_recorded_coverage",
];

const DOWN: &[&str] = &[
    "CREATE INDEX idx_fixes_recorded_coverage ON fixes \
     (recorded_at, member_id, lat, lon, accuracy_m, flags)",
    "CREATE INDEX idx_fixes_member_recorded ON fixes (member_id, recorded_at)",
    "DROP INDEX idx_fixes_member_coverage",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::on_sqlite(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::on_sqlite(manager, DOWN).await
    }
}
