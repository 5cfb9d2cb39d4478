//! A stored GPS fix (check-in).

use sea_orm::entity::prelude::*;

/// A stored fix, in WGS-84; `datum` is what it came in, `flags` a bit set
/// ([`crate::domain::plausibility::Flags`]).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "fixes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub member_id: Uuid,
    pub client_id: Uuid,
    pub recorded_at: DateTimeUtc,
    pub received_at: DateTimeUtc,
    pub lat: f64,
    pub lon: f64,
    pub accuracy_m: f64,
    pub speed_mps: Option<f64>,
    pub heading_deg: Option<f64>,
    pub altitude_m: Option<f64>,
    pub battery: Option<f64>,
    pub kind: String,
    pub post_id: Option<Uuid>,
    pub shift_id: Option<Uuid>,
    pub datum: String,
    pub mock: bool,
    pub flags: i32,
    pub source: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The condition that lets a read of fixes by time use the index by member on SQLite,
/// where fixes have no index on time (migration `m20261206_000009_fixes_by_member`):
/// every member's fixes are then read as one range of that index. `None` on PostgreSQL,
/// which reads by time through its index on time.
pub fn by_member_on(backend: sea_orm::DbBackend) -> Option<sea_orm::Condition> {
    (backend == sea_orm::DbBackend::Sqlite).then(|| {
        sea_orm::Condition::all().add(
            Column::MemberId.in_subquery(
                sea_orm::sea_query::Query::select()
                    .column(super::member::Column::Id)
                    .from(super::member::Entity)
                    .to_owned(),
            ),
        )
    })
}
