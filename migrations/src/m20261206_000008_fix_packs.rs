//! Packed hours of fixes (SQLite only): for each past hour and member, the columns the
//! coverage rule reads of that member's fixes in that hour, in one blob (see
//! `patrol_server::packs`). A coverage pass over a past day then reads a few hundred
//! thousand blobs laid out one after another instead of tens of millions of index entries
//! scattered over the file.
//!
//! `fix_packs_range` holds the hours packed so far, `[from_hour, until_hour)` in hours since
//! the Unix epoch. A fix written into a packed hour (a phone syncing late) marks its
//! member's hour in `fix_packs_dirty` (with the time, in seconds since the epoch, of the
//! latest such write), in the transaction that writes it; readers take such a member's
//! fixes of that hour from the table until the hour is packed again. (The marks are made by
//! the server's writer, not by triggers: a row trigger, even one that does nothing, cost
//! SQLite about a third of its insert rate.)
//! On PostgreSQL nothing is created: coverage reads the fixes themselves there.

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
        marked_at INTEGER NOT NULL,
        PRIMARY KEY (hour, member_id)
    ) WITHOUT ROWID",
    "CREATE TABLE fix_packs_range (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        from_hour INTEGER NOT NULL,
        until_hour INTEGER NOT NULL
    )",
];

const DOWN: &[&str] = &[
    "DROP TABLE fix_packs_range",
    "DROP TABLE fix_packs_dirty",
    "DROP TABLE fix_packs",
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
