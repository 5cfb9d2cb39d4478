//! Posts (routes, checkpoints, kiosks, areas) and shifts (the duty roster).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Units {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Members {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Teams {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Posts {
    Table,
    Id,
    Code,
    Name,
    Kind,
    UnitId,
    Geometry,
    LengthM,
    CorridorM,
    RadiusM,
    MinHeadcount,
    RequiredCoverage,
    RequiredPresence,
    ArrivalGraceMin,
    Staffing,
    MinLon,
    MinLat,
    MaxLon,
    MaxLat,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Shifts {
    Table,
    Id,
    PostId,
    StartsAt,
    EndsAt,
    TeamId,
    MinHeadcount,
    Note,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ShiftMembers {
    Table,
    ShiftId,
    MemberId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Posts::Table)
                    .col(pk_uuid(Posts::Id))
                    .col(string_uniq(Posts::Code))
                    .col(string(Posts::Name))
                    .col(string(Posts::Kind))
                    .col(uuid(Posts::UnitId))
                    .col(text(Posts::Geometry))
                    .col(double_null(Posts::LengthM))
                    .col(double_null(Posts::CorridorM))
                    .col(double_null(Posts::RadiusM))
                    .col(integer(Posts::MinHeadcount))
                    .col(double_null(Posts::RequiredCoverage))
                    .col(double_null(Posts::RequiredPresence))
                    .col(integer(Posts::ArrivalGraceMin))
                    .col(string(Posts::Staffing))
                    .col(double(Posts::MinLon))
                    .col(double(Posts::MinLat))
                    .col(double(Posts::MaxLon))
                    .col(double(Posts::MaxLat))
                    .col(timestamp_with_time_zone(Posts::CreatedAt))
                    .col(timestamp_with_time_zone(Posts::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_posts_unit")
                            .from(Posts::Table, Posts::UnitId)
                            .to(Units::Table, Units::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_posts_unit")
                    .table(Posts::Table)
                    .col(Posts::UnitId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Shifts::Table)
                    .col(pk_uuid(Shifts::Id))
                    .col(uuid(Shifts::PostId))
                    .col(timestamp_with_time_zone(Shifts::StartsAt))
                    .col(timestamp_with_time_zone(Shifts::EndsAt))
                    .col(uuid_null(Shifts::TeamId))
                    .col(integer_null(Shifts::MinHeadcount))
                    .col(string_null(Shifts::Note))
                    .col(timestamp_with_time_zone(Shifts::CreatedAt))
                    .col(timestamp_with_time_zone(Shifts::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_shifts_post")
                            .from(Shifts::Table, Shifts::PostId)
                            .to(Posts::Table, Posts::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_shifts_team")
                            .from(Shifts::Table, Shifts::TeamId)
                            .to(Teams::Table, Teams::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        // A generated roster is idempotent through this: the same post, times and team
        // are one shift.
        manager
            .create_index(
                Index::create()
                    .name("uq_shifts_post_span_team")
                    .table(Shifts::Table)
                    .col(Shifts::PostId)
                    .col(Shifts::StartsAt)
                    .col(Shifts::EndsAt)
                    .col(Shifts::TeamId)
                    .unique()
                    .to_owned(),
            )
            .await?;
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
            .create_index(
                Index::create()
                    .name("idx_shifts_team")
                    .table(Shifts::Table)
                    .col(Shifts::TeamId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ShiftMembers::Table)
                    .col(uuid(ShiftMembers::ShiftId))
                    .col(uuid(ShiftMembers::MemberId))
                    .primary_key(
                        Index::create()
                            .col(ShiftMembers::ShiftId)
                            .col(ShiftMembers::MemberId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_shift_members_shift")
                            .from(ShiftMembers::Table, ShiftMembers::ShiftId)
                            .to(Shifts::Table, Shifts::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_shift_members_member")
                            .from(ShiftMembers::Table, ShiftMembers::MemberId)
                            .to(Members::Table, Members::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_shift_members_member")
                    .table(ShiftMembers::Table)
                    .col(ShiftMembers::MemberId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ShiftMembers::Table.into_iden(),
            Shifts::Table.into_iden(),
            Posts::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
