//! The members a shift's team had when the shift began, so that a finished shift is
//! computed with the people of its time, whatever later edits of the team say.
//! `shifts.team_frozen_at` is set once they are recorded; until then (a shift that has
//! not begun, or one whose team has not changed since it began) the team's members now
//! are the members of its time.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Shifts {
    Table,
    Id,
    TeamFrozenAt,
}

#[derive(DeriveIden)]
enum Members {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum ShiftTeamMembers {
    Table,
    ShiftId,
    MemberId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Shifts::Table)
                    .add_column(timestamp_with_time_zone_null(Shifts::TeamFrozenAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ShiftTeamMembers::Table)
                    .col(uuid(ShiftTeamMembers::ShiftId))
                    .col(uuid(ShiftTeamMembers::MemberId))
                    .primary_key(
                        Index::create()
                            .col(ShiftTeamMembers::ShiftId)
                            .col(ShiftTeamMembers::MemberId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_shift_team_members_shift")
                            .from(ShiftTeamMembers::Table, ShiftTeamMembers::ShiftId)
                            .to(Shifts::Table, Shifts::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_shift_team_members_member")
                            .from(ShiftTeamMembers::Table, ShiftTeamMembers::MemberId)
                            .to(Members::Table, Members::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_shift_team_members_member")
                    .table(ShiftTeamMembers::Table)
                    .col(ShiftTeamMembers::MemberId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ShiftTeamMembers::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Shifts::Table)
                    .drop_column(Shifts::TeamFrozenAt)
                    .to_owned(),
            )
            .await
    }
}
