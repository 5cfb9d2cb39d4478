//! The organisation, accounts and login sessions.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Units {
    Table,
    Id,
    Code,
    Name,
    Kind,
    ParentId,
    Path,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Members {
    Table,
    Id,
    Username,
    DisplayName,
    Role,
    UnitId,
    Active,
    PasswordHash,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Teams {
    Table,
    Id,
    Code,
    Name,
    Kind,
    UnitId,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum TeamMembers {
    Table,
    TeamId,
    MemberId,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    MemberId,
    CreatedAt,
    RevokedAt,
    RevokedReason,
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    Id,
    SessionId,
    TokenHash,
    CreatedAt,
    ExpiresAt,
    RotatedAt,
    ReplacedBy,
    GraceUsed,
}

#[derive(DeriveIden)]
enum LoginFailures {
    Table,
    Id,
    Username,
    At,
}

#[derive(DeriveIden)]
enum ServerKeys {
    Table,
    Name,
    Value,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Units::Table)
                    .col(pk_uuid(Units::Id))
                    .col(string_uniq(Units::Code))
                    .col(string(Units::Name))
                    .col(string(Units::Kind))
                    .col(uuid_null(Units::ParentId))
                    .col(string(Units::Path))
                    .col(timestamp_with_time_zone(Units::CreatedAt))
                    .col(timestamp_with_time_zone(Units::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_units_parent")
                            .from(Units::Table, Units::ParentId)
                            .to(Units::Table, Units::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_units_path")
                    .table(Units::Table)
                    .col(Units::Path)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Members::Table)
                    .col(pk_uuid(Members::Id))
                    .col(string_uniq(Members::Username))
                    .col(string(Members::DisplayName))
                    .col(string(Members::Role))
                    .col(uuid_null(Members::UnitId))
                    .col(boolean(Members::Active))
                    .col(string(Members::PasswordHash))
                    .col(timestamp_with_time_zone(Members::CreatedAt))
                    .col(timestamp_with_time_zone(Members::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_members_unit")
                            .from(Members::Table, Members::UnitId)
                            .to(Units::Table, Units::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_members_unit")
                    .table(Members::Table)
                    .col(Members::UnitId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Teams::Table)
                    .col(pk_uuid(Teams::Id))
                    .col(string_uniq(Teams::Code))
                    .col(string(Teams::Name))
                    .col(string(Teams::Kind))
                    .col(uuid(Teams::UnitId))
                    .col(timestamp_with_time_zone(Teams::CreatedAt))
                    .col(timestamp_with_time_zone(Teams::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_teams_unit")
                            .from(Teams::Table, Teams::UnitId)
                            .to(Units::Table, Units::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(TeamMembers::Table)
                    .col(uuid(TeamMembers::TeamId))
                    .col(uuid(TeamMembers::MemberId))
                    .primary_key(
                        Index::create()
                            .col(TeamMembers::TeamId)
                            .col(TeamMembers::MemberId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_team_members_team")
                            .from(TeamMembers::Table, TeamMembers::TeamId)
                            .to(Teams::Table, Teams::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_team_members_member")
                            .from(TeamMembers::Table, TeamMembers::MemberId)
                            .to(Members::Table, Members::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_team_members_member")
                    .table(TeamMembers::Table)
                    .col(TeamMembers::MemberId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Sessions::Table)
                    .col(pk_uuid(Sessions::Id))
                    .col(uuid(Sessions::MemberId))
                    .col(timestamp_with_time_zone(Sessions::CreatedAt))
                    .col(timestamp_with_time_zone_null(Sessions::RevokedAt))
                    .col(string_null(Sessions::RevokedReason))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_sessions_member")
                            .from(Sessions::Table, Sessions::MemberId)
                            .to(Members::Table, Members::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RefreshTokens::Table)
                    .col(pk_uuid(RefreshTokens::Id))
                    .col(uuid(RefreshTokens::SessionId))
                    .col(string_uniq(RefreshTokens::TokenHash))
                    .col(timestamp_with_time_zone(RefreshTokens::CreatedAt))
                    .col(timestamp_with_time_zone(RefreshTokens::ExpiresAt))
                    .col(timestamp_with_time_zone_null(RefreshTokens::RotatedAt))
                    .col(uuid_null(RefreshTokens::ReplacedBy))
                    .col(boolean(RefreshTokens::GraceUsed))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_refresh_tokens_session")
                            .from(RefreshTokens::Table, RefreshTokens::SessionId)
                            .to(Sessions::Table, Sessions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_refresh_tokens_session")
                    .table(RefreshTokens::Table)
                    .col(RefreshTokens::SessionId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(LoginFailures::Table)
                    .col(pk_uuid(LoginFailures::Id))
                    .col(string(LoginFailures::Username))
                    .col(timestamp_with_time_zone(LoginFailures::At))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_login_failures_username_at")
                    .table(LoginFailures::Table)
                    .col(LoginFailures::Username)
                    .col(LoginFailures::At)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ServerKeys::Table)
                    .col(string(ServerKeys::Name).primary_key())
                    .col(string(ServerKeys::Value))
                    .col(timestamp_with_time_zone(ServerKeys::CreatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ServerKeys::Table.into_iden(),
            LoginFailures::Table.into_iden(),
            RefreshTokens::Table.into_iden(),
            Sessions::Table.into_iden(),
            TeamMembers::Table.into_iden(),
            Teams::Table.into_iden(),
            Members::Table.into_iden(),
            Units::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
