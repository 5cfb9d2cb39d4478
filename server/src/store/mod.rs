//! sea-orm entities and the queries the routes share.

pub mod alert;
pub mod audit_record;
pub mod device_key;
pub mod fix;
pub mod kiosk;
pub mod kiosk_sign_on;
pub mod login_failure;
pub mod member;
pub mod post;
pub mod post_state;
pub mod refresh_token;
pub mod server_key;
pub mod session;
pub mod shift;
pub mod shift_coverage;
pub mod shift_member;
pub mod shift_team_member;
pub mod team;
pub mod team_member;
pub mod unit;

use std::collections::{HashMap, HashSet};

use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use uuid::Uuid;

/// The rows of `E` with these ids (those that exist), keyed by id: `column` is the id
/// column and `key` reads it back. Ids are read in chunks that every database takes in
/// one `IN` list.
pub async fn by_ids<E, C>(
    db: &C,
    column: E::Column,
    key: impl Fn(&E::Model) -> Uuid,
    ids: impl IntoIterator<Item = Uuid>,
) -> Result<HashMap<Uuid, E::Model>, DbErr>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    let ids: Vec<Uuid> = ids
        .into_iter()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        for row in E::find()
            .filter(column.is_in(chunk.iter().copied()))
            .all(db)
            .await?
        {
            out.insert(key(&row), row);
        }
    }
    Ok(out)
}
