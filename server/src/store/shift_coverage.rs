//! The stored coverage of a finished shift.

use sea_orm::entity::prelude::*;

/// A stored result: `result` is the JSON of [`crate::domain::coverage::ShiftCoverage`].
/// `stale` marks a result that fixes arriving late have made out of date. Each such mark
/// bumps `generation`, and a result is stored only over the generation it was computed
/// from; a row marked before any result was stored holds `status` `pending` and an empty
/// `result`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "shift_coverage")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub shift_id: Uuid,
    pub post_id: Uuid,
    pub starts_at: DateTimeUtc,
    pub ends_at: DateTimeUtc,
    pub status: String,
    #[sea_orm(column_type = "Text")]
    pub result: String,
    pub computed_at: DateTimeUtc,
    pub stale: bool,
    pub generation: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
