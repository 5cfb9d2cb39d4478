//! Kiosk devices: a shared tablet registered for a kiosk or checkpoint post, the officers
//! signed on at it, and the PIN a member may set to sign on there without their password.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Members {
    Table,
    Id,
    PinHash,
}

#[derive(DeriveIden)]
enum Posts {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Kiosks {
    Table,
    Id,
    PostId,
    Name,
    TokenHash,
    CreatedBy,
    CreatedAt,
    RevokedAt,
    LastSeenAt,
}

#[derive(DeriveIden)]
enum KioskSignOns {
    Table,
    Id,
    KioskId,
    MemberId,
    PostId,
    SignedOnAt,
    SignedOffAt,
    SignedOffHow,
}

/// Partial, so that a member has one open sign-on at most, whatever two devices race to do;
/// written out as SQLite and PostgreSQL both read it.
const ONE_OPEN_SIGN_ON: &str = "CREATE UNIQUE INDEX idx_kiosk_sign_ons_open_member \
     ON kiosk_sign_ons (member_id) WHERE signed_off_at IS NULL";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Members::Table)
                    .add_column(text_null(Members::PinHash))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Kiosks::Table)
                    .col(pk_uuid(Kiosks::Id))
                    .col(uuid(Kiosks::PostId))
                    .col(text(Kiosks::Name))
                    .col(text_uniq(Kiosks::TokenHash))
                    .col(uuid(Kiosks::CreatedBy))
                    .col(timestamp_with_time_zone(Kiosks::CreatedAt))
                    .col(timestamp_with_time_zone_null(Kiosks::RevokedAt))
                    .col(timestamp_with_time_zone_null(Kiosks::LastSeenAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_kiosks_post")
                            .from(Kiosks::Table, Kiosks::PostId)
                            .to(Posts::Table, Posts::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_kiosks_created_by")
                            .from(Kiosks::Table, Kiosks::CreatedBy)
                            .to(Members::Table, Members::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_kiosks_post")
                    .table(Kiosks::Table)
                    .col(Kiosks::PostId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(KioskSignOns::Table)
                    .col(pk_uuid(KioskSignOns::Id))
                    .col(uuid(KioskSignOns::KioskId))
                    .col(uuid(KioskSignOns::MemberId))
                    .col(uuid(KioskSignOns::PostId))
                    .col(timestamp_with_time_zone(KioskSignOns::SignedOnAt))
                    .col(timestamp_with_time_zone_null(KioskSignOns::SignedOffAt))
                    .col(text_null(KioskSignOns::SignedOffHow))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_kiosk_sign_ons_kiosk")
                            .from(KioskSignOns::Table, KioskSignOns::KioskId)
                            .to(Kiosks::Table, Kiosks::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_kiosk_sign_ons_member")
                            .from(KioskSignOns::Table, KioskSignOns::MemberId)
                            .to(Members::Table, Members::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_kiosk_sign_ons_kiosk_off")
                    .table(KioskSignOns::Table)
                    .col(KioskSignOns::KioskId)
                    .col(KioskSignOns::SignedOffAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_kiosk_sign_ons_member_on")
                    .table(KioskSignOns::Table)
                    .col(KioskSignOns::MemberId)
                    .col(KioskSignOns::SignedOnAt)
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(ONE_OPEN_SIGN_ON)
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(KioskSignOns::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Kiosks::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Members::Table)
                    .drop_column(Members::PinHash)
                    .to_owned(),
            )
            .await
    }
}
