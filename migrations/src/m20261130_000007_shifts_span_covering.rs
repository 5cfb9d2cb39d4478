//! The index of shifts by start carries the columns a span's shifts are listed by (end,
//! post, id), so that listing a day's shifts (`GET /coverage` reads ten thousand of them)
//! reads the index alone and never looks a row up in the table. It replaces the index on
//! `starts_at` alone, of which it is an extension.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Shifts {
    Table,
    Id,
    PostId,
    StartsAt,
    EndsAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_shifts_span")
                    .table(Shifts::Table)
                    .col(Shifts::StartsAt)
                    .col(Shifts::EndsAt)
                    .col(Shifts::PostId)
                    .col(Shifts::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_shifts_starts_at")
                    .table(Shifts::Table)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_shifts_starts_at")
                    .table(Shifts::Table)
                    .col(Shifts::StartsAt)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_shifts_span")
                    .table(Shifts::Table)
                    .to_owned(),
            )
            .await
    }
}
