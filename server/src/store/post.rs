//! A place of duty: a route, checkpoint, kiosk or area.

use sea_orm::entity::prelude::*;

/// A stored post. `geometry` is GeoJSON text in WGS-84; the bounding box is kept for
/// quick spatial filters.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "posts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub code: String,
    pub name: String,
    pub kind: String,
    pub unit_id: Uuid,
    #[sea_orm(column_type = "Text")]
    pub geometry: String,
    pub length_m: Option<f64>,
    pub corridor_m: Option<f64>,
    pub radius_m: Option<f64>,
    pub min_headcount: i32,
    pub required_coverage: Option<f64>,
    pub required_presence: Option<f64>,
    pub arrival_grace_min: i32,
    pub staffing: String,
    pub min_lon: f64,
    pub min_lat: f64,
    pub max_lon: f64,
    pub max_lat: f64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
