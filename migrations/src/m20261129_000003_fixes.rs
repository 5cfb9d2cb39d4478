//! GPS fixes (check-ins), device keys for the Traccar/OsmAnd protocol, and the audit
//! trail of reads of other people's positions.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Members {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Fixes {
    Table,
    Id,
    MemberId,
    ClientId,
    RecordedAt,
    ReceivedAt,
    Lat,
    Lon,
    AccuracyM,
    SpeedMps,
    HeadingDeg,
    AltitudeM,
    Battery,
    Kind,
    PostId,
    ShiftId,
    Datum,
    Mock,
    Flags,
    Source,
}

#[derive(DeriveIden)]
enum DeviceKeys {
    Table,
    Id,
    MemberId,
    KeyHash,
    Label,
    CreatedAt,
    RevokedAt,
    LastUsedAt,
}

#[derive(DeriveIden)]
enum AuditRecords {
    Table,
    Id,
    ViewerId,
    SubjectId,
    Action,
    SpanFrom,
    SpanTo,
    At,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Post and shift ids are kept without foreign keys: a fix is evidence and stays
        // even when the roster it referred to is rewritten.
        manager
            .create_table(
                Table::create()
                    .table(Fixes::Table)
                    .col(pk_uuid(Fixes::Id))
                    .col(uuid(Fixes::MemberId))
                    .col(uuid(Fixes::ClientId))
                    .col(timestamp_with_time_zone(Fixes::RecordedAt))
                    .col(timestamp_with_time_zone(Fixes::ReceivedAt))
                    .col(double(Fixes::Lat))
                    .col(double(Fixes::Lon))
                    .col(double(Fixes::AccuracyM))
                    .col(double_null(Fixes::SpeedMps))
                    .col(double_null(Fixes::HeadingDeg))
                    .col(double_null(Fixes::AltitudeM))
                    .col(double_null(Fixes::Battery))
                    .col(string(Fixes::Kind))
                    .col(uuid_null(Fixes::PostId))
                    .col(uuid_null(Fixes::ShiftId))
                    .col(string(Fixes::Datum))
                    .col(boolean(Fixes::Mock))
                    .col(integer(Fixes::Flags))
                    .col(string(Fixes::Source))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_fixes_member")
                            .from(Fixes::Table, Fixes::MemberId)
                            .to(Members::Table, Members::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        // Idempotency: one fix per member and client id, whatever the retries and processes.
        manager
            .create_index(
                Index::create()
                    .name("uq_fixes_member_client")
                    .table(Fixes::Table)
                    .col(Fixes::MemberId)
                    .col(Fixes::ClientId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_fixes_member_recorded")
                    .table(Fixes::Table)
                    .col(Fixes::MemberId)
                    .col(Fixes::RecordedAt)
                    .to_owned(),
            )
            .await?;
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
            .create_table(
                Table::create()
                    .table(DeviceKeys::Table)
                    .col(pk_uuid(DeviceKeys::Id))
                    .col(uuid(DeviceKeys::MemberId))
                    .col(string_uniq(DeviceKeys::KeyHash))
                    .col(string_null(DeviceKeys::Label))
                    .col(timestamp_with_time_zone(DeviceKeys::CreatedAt))
                    .col(timestamp_with_time_zone_null(DeviceKeys::RevokedAt))
                    .col(timestamp_with_time_zone_null(DeviceKeys::LastUsedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_device_keys_member")
                            .from(DeviceKeys::Table, DeviceKeys::MemberId)
                            .to(Members::Table, Members::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        // Audit records refer to members by id without foreign keys, so that deleting a
        // member can never delete or block the trail.
        manager
            .create_table(
                Table::create()
                    .table(AuditRecords::Table)
                    .col(pk_uuid(AuditRecords::Id))
                    .col(uuid(AuditRecords::ViewerId))
                    .col(uuid(AuditRecords::SubjectId))
                    .col(string(AuditRecords::Action))
                    .col(timestamp_with_time_zone_null(AuditRecords::SpanFrom))
                    .col(timestamp_with_time_zone_null(AuditRecords::SpanTo))
                    .col(timestamp_with_time_zone(AuditRecords::At))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_audit_records_at")
                    .table(AuditRecords::Table)
                    .col(AuditRecords::At)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuditRecords::Table.into_iden(),
            DeviceKeys::Table.into_iden(),
            Fixes::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
