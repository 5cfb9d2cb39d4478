//! The index of fixes by time carries the columns the coverage rule reads, so that reading
//! a window of time (the coverage passes, a rebuild) never looks a row up in the table.
//! It replaces the index on `recorded_at` alone, of which it is an extension.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Fixes {
    Table,
    MemberId,
    RecordedAt,
    Lat,
    Lon,
    AccuracyM,
    Flags,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_fixes_recorded_coverage")
                    .table(Fixes::Table)
                    .col(Fixes::RecordedAt)
                    .col(Fixes::MemberId)
                    .col(Fixes::Lat)
                    .col(Fixes::Lon)
                    .col(Fixes::AccuracyM)
                    .col(Fixes::Flags)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_fixes_recorded")
                    .table(Fixes::Table)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_fixes_recorded")
                    .table(Fixes::Table)
                    .col(Fixes::RecordedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_fixes_recorded_coverage")
                    .table(Fixes::Table)
                    .to_owned(),
            )
            .await
    }
}
