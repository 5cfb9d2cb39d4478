//! A member of a shift's team as the team was when the shift began: recorded before the
//! team first changes after that (or when a shift is created already begun), so that a
//! shift's people never change with later edits of its team.

use sea_orm::entity::prelude::*;

/// One member of a shift's team at the shift's time.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "shift_team_members")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub shift_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub member_id: Uuid,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
