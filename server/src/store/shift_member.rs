//! A member named on a shift (besides the members of its team).

use sea_orm::entity::prelude::*;

/// One explicit shift member.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "shift_members")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub shift_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub member_id: Uuid,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
