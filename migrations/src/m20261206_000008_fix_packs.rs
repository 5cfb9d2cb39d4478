//! Packed hours of fixes (SQLite only): for each past hour and member, the columns the
//! coverage rule reads of that member's fixes in that hour, in one blob (see
//! `patrol_server::packs`). A coverage pass over a past day then reads a few hundred
//! thousand blobs laid out one after another instead of tens of millions of index entries
//! scattered over the file.
//!
//! `fix_packs_range` holds the hours packed so far, `[from_hour, until_hour)` in hours since
//! the Unix epoch, with their bounds as stored timestamps for the triggers. A fix inserted,
//! changed or deleted in a packed hour (a phone syncing late, a purge, a repair by hand)
//! marks its member's hour in `fix_packs_dirty` in the same transaction, through the
//! triggers, whoever writes it; readers take such a member's fixes of that hour from the
//! table until the hour is packed again. On PostgreSQL nothing is created: coverage reads
//! the fixes themselves there.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "CREATE TABLE fix_packs (
        hour INTEGER NOT NULL,
        member_id BLOB NOT NULL,
        fixes BLOB NOT NULL
    )",
    "CREATE UNIQUE INDEX uq_fix_packs_hour_member ON fix_packs (hour, member_id)",
    "CREATE TABLE fix_packs_dirty (
        hour INTEGER NOT NULL,
        member_id BLOB NOT NULL,
        PRIMARY KEY (hour, member_id)
    ) WITHOUT ROWID",
    "CREATE TABLE fix_packs_range (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        from_hour INTEGER NOT NULL,
        until_hour INTEGER NOT NULL,
        from_at TEXT NOT NULL,
        until_at TEXT NOT NULL
    )",
    "CREATE TRIGGER fix_packs_insert AFTER INSERT ON fixes
     WHEN NEW.recorded_at >= (SELECT from_at FROM fix_packs_range)
      AND NEW.recorded_at < (SELECT until_at FROM fix_packs_range)
     BEGIN
        INSERT INTO fix_packs_dirty (hour, member_id)
        VALUES (unixepoch(NEW.recorded_at) / 3600, NEW.member_id)
        ON CONFLICT DO NOTHING;
     END",
    "CREATE TRIGGER fix_packs_delete AFTER DELETE ON fixes
     WHEN OLD.recorded_at >= (SELECT from_at FROM fix_packs_range)
      AND OLD.recorded_at < (SELECT until_at FROM fix_packs_range)
     BEGIN
        INSERT INTO fix_packs_dirty (hour, member_id)
        VALUES (unixepoch(OLD.recorded_at) / 3600, OLD.member_id)
        ON CONFLICT DO NOTHING;
     END",
    "CREATE TRIGGER fix_packs_update AFTER UPDATE ON fixes
     BEGIN
        INSERT INTO fix_packs_dirty (hour, member_id)
        SELECT unixepoch(OLD.recorded_at) / 3600, OLD.member_id FROM fix_packs_range
        WHERE OLD.recorded_at >= from_at AND OLD.recorded_at < until_at
        ON CONFLICT DO NOTHING;
        INSERT INTO fix_packs_dirty (hour, member_id)
        SELECT unixepoch(NEW.recorded_at) / 3600, NEW.member_id FROM fix_packs_range
        WHERE NEW.recorded_at >= from_at AND NEW.recorded_at < until_at
        ON CONFLICT DO NOTHING;
     END",
];

const DOWN: &[&str] = &[
    "DROP TRIGGER fix_packs_update",
    "DROP TRIGGER fix_packs_delete",
    "DROP TRIGGER fix_packs_insert",
    "DROP TABLE fix_packs_range",
    "DROP TABLE fix_packs_dirty",
    "DROP TABLE fix_packs",
];

async fn run(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    if manager.get_database_backend() != sea_orm::DbBackend::Sqlite {
        return Ok(());
    }
    let db = manager.get_connection();
    for s in statements {
        db.execute_unprepared(s).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, DOWN).await
    }
}
