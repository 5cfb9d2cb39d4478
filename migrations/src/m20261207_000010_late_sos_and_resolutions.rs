//! SOS fixes indexed by arrival, so that an SOS recorded long before it arrived (a phone
//! that was offline) is found by the alert evaluator; and why each alert closed.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Alerts {
    Table,
    Resolution,
}

/// Partial: it holds the SOS fixes only, so the check-in writer pays for it only for them.
const SOS_INDEX: &str =
    "CREATE INDEX idx_fixes_sos_received ON fixes (received_at) WHERE kind = 'sos'";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(SOS_INDEX)
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Alerts::Table)
                    .add_column(string_null(Alerts::Resolution))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alerts::Table)
                    .drop_column(Alerts::Resolution)
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX idx_fixes_sos_received")
            .await?;
        Ok(())
    }
}
