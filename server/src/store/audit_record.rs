//! A record of someone reading another member's positions. Append-only.

use sea_orm::entity::prelude::*;

/// A stored audit record.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_records")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub viewer_id: Uuid,
    pub subject_id: Uuid,
    pub action: String,
    pub span_from: Option<DateTimeUtc>,
    pub span_to: Option<DateTimeUtc>,
    pub at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
