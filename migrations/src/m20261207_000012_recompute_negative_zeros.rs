//! Stored coverage figures written as `-0.0` (an empty sum of lengths) are marked stale,
//! so that the updater computes them again with `0`. Marking a result stale only makes it
//! computed again, so the loose match costs nothing but a recomputation.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("UPDATE shift_coverage SET stale = TRUE WHERE result LIKE '%-0.0%'")
            .await?;
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}
