//! An alert raised by the evaluator.

use sea_orm::entity::prelude::*;

/// A stored alert. `open_key` is `kind:subject` while the alert is open or acknowledged
/// and NULL once it is resolved; a unique index on it keeps one open alert per subject.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "alerts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub kind: String,
    pub state: String,
    pub open_key: Option<String>,
    pub post_id: Option<Uuid>,
    pub post_code: Option<String>,
    pub member_id: Option<Uuid>,
    pub member_name: Option<String>,
    pub shift_id: Option<Uuid>,
    pub unit_id: Option<Uuid>,
    #[sea_orm(column_type = "Text")]
    pub message: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub raised_at: DateTimeUtc,
    pub acked_at: Option<DateTimeUtc>,
    pub acked_by: Option<Uuid>,
    #[sea_orm(column_type = "Text", nullable)]
    pub ack_note: Option<String>,
    pub resolved_at: Option<DateTimeUtc>,
    /// Why it closed (see `AlertOut::resolution`).
    pub resolution: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
