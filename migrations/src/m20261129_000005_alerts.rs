//! Alerts raised by the evaluator, the last published staffed state of each post, and
//! (PostgreSQL only) the sequence that numbers live events across processes.

use sea_orm_migration::{prelude::*, schema::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Alerts {
    Table,
    Id,
    Kind,
    State,
    OpenKey,
    PostId,
    PostCode,
    MemberId,
    MemberName,
    ShiftId,
    UnitId,
    Message,
    Lat,
    Lon,
    RaisedAt,
    AckedAt,
    AckedBy,
    AckNote,
    ResolvedAt,
}

#[derive(DeriveIden)]
enum PostStates {
    Table,
    PostId,
    Staffed,
    Present,
    Required,
    ChangedAt,
}

/// The sequence of live event ids (PostgreSQL).
const EVENT_SEQUENCE: &str = "patrol_event_seq";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alerts::Table)
                    .col(uuid(Alerts::Id).primary_key())
                    .col(string(Alerts::Kind))
                    .col(string(Alerts::State))
                    // "kind:subject" while open or acknowledged, NULL once resolved: the
                    // unique index allows one open alert per subject and kind, and NULLs
                    // never collide on either database.
                    .col(string_null(Alerts::OpenKey))
                    .col(uuid_null(Alerts::PostId))
                    .col(string_null(Alerts::PostCode))
                    .col(uuid_null(Alerts::MemberId))
                    .col(string_null(Alerts::MemberName))
                    .col(uuid_null(Alerts::ShiftId))
                    .col(uuid_null(Alerts::UnitId))
                    .col(text(Alerts::Message))
                    .col(double_null(Alerts::Lat))
                    .col(double_null(Alerts::Lon))
                    .col(timestamp_with_time_zone(Alerts::RaisedAt))
                    .col(timestamp_with_time_zone_null(Alerts::AckedAt))
                    .col(uuid_null(Alerts::AckedBy))
                    .col(text_null(Alerts::AckNote))
                    .col(timestamp_with_time_zone_null(Alerts::ResolvedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_alerts_open_key")
                    .table(Alerts::Table)
                    .col(Alerts::OpenKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_alerts_raised_at")
                    .table(Alerts::Table)
                    .col(Alerts::RaisedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PostStates::Table)
                    .col(uuid(PostStates::PostId).primary_key())
                    .col(boolean(PostStates::Staffed))
                    .col(integer(PostStates::Present))
                    .col(integer(PostStates::Required))
                    .col(timestamp_with_time_zone(PostStates::ChangedAt))
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(&format!("CREATE SEQUENCE IF NOT EXISTS {EVENT_SEQUENCE}"))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(&format!("DROP SEQUENCE IF EXISTS {EVENT_SEQUENCE}"))
                .await?;
        }
        manager
            .drop_table(Table::drop().table(PostStates::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Alerts::Table).to_owned())
            .await
    }
}
