//! Stored coverage of each finished shift, kept up to date as fixes arrive.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Shifts {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum ShiftCoverage {
    Table,
    ShiftId,
    PostId,
    StartsAt,
    EndsAt,
    Status,
    Result,
    ComputedAt,
    Stale,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ShiftCoverage::Table)
                    .col(uuid(ShiftCoverage::ShiftId).primary_key())
                    .col(uuid(ShiftCoverage::PostId))
                    .col(timestamp_with_time_zone(ShiftCoverage::StartsAt))
                    .col(timestamp_with_time_zone(ShiftCoverage::EndsAt))
                    .col(string(ShiftCoverage::Status))
                    .col(text(ShiftCoverage::Result))
                    .col(timestamp_with_time_zone(ShiftCoverage::ComputedAt))
                    .col(boolean(ShiftCoverage::Stale))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_shift_coverage_shift")
                            .from(ShiftCoverage::Table, ShiftCoverage::ShiftId)
                            .to(Shifts::Table, Shifts::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_shift_coverage_starts")
                    .table(ShiftCoverage::Table)
                    .col(ShiftCoverage::StartsAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ShiftCoverage::Table).to_owned())
            .await
    }
}
