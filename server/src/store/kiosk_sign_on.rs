//! A member signed on at a kiosk device, from `signed_on_at` until `signed_off_at`.

use sea_orm::entity::prelude::*;

/// A stored sign-on.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "kiosk_sign_ons")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub kiosk_id: Uuid,
    pub member_id: Uuid,
    pub post_id: Uuid,
    pub signed_on_at: DateTimeUtc,
    pub signed_off_at: Option<DateTimeUtc>,
    /// `sign_off`, `replaced` (signed on at another kiosk) or `revoked` (the kiosk was).
    pub signed_off_how: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
