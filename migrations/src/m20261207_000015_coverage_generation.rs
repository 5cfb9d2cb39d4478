//! A generation on stored coverage: every mark that makes a stored result out of date
//! bumps it, and a result is stored only over the generation it was computed from, so a
//! computation that read the fixes before a late fix arrived never clears that fix's mark.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ShiftCoverage {
    Table,
    Generation,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ShiftCoverage::Table)
                    .add_column(big_integer(ShiftCoverage::Generation).default(0))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ShiftCoverage::Table)
                    .drop_column(ShiftCoverage::Generation)
                    .to_owned(),
            )
            .await
    }
}
