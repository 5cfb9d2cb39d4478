//! One roster entry: a post, a time span and the people on it.

use sea_orm::entity::prelude::*;

/// A stored shift.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "shifts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub post_id: Uuid,
    pub starts_at: DateTimeUtc,
    pub ends_at: DateTimeUtc,
    pub team_id: Option<Uuid>,
    pub min_headcount: Option<i32>,
    pub note: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// When the team's members were recorded in `shift_team_members` (see
    /// [`super::shift_team_member`]); `None` while the team's members now stand for them.
    pub team_frozen_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
