//! A failed password login, kept for throttling, and the throttle's queries.

use sea_orm::{QuerySelect, Set, entity::prelude::*};

/// A stored failed login.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "login_failures")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The username tried, or a key no username can be (`kiosk:<id>`).
    pub username: String,
    /// The client's address as the throttle keys it (empty for failures stored before
    /// addresses were).
    pub address: String,
    pub at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// How many failures a key has since some time, and the first and last of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Failures counted.
    pub count: u64,
    /// The earliest of them.
    pub first: Option<DateTimeUtc>,
    /// The latest of them.
    pub last: Option<DateTimeUtc>,
}

/// The failures under `username` since `since`, from `address` only when one is given.
pub async fn tally<C: ConnectionTrait>(
    db: &C,
    username: &str,
    address: Option<&str>,
    since: DateTimeUtc,
) -> Result<Tally, DbErr> {
    let mut query = Entity::find()
        .select_only()
        .column_as(Column::Id.count(), "count")
        .column_as(Column::At.min(), "first")
        .column_as(Column::At.max(), "last")
        .filter(Column::Username.eq(username));
    if let Some(address) = address {
        query = query.filter(Column::Address.eq(address));
    }
    let row: Option<(i64, Option<DateTimeUtc>, Option<DateTimeUtc>)> = query
        .filter(Column::At.gt(since))
        .into_tuple()
        .one(db)
        .await?;
    Ok(
        row.map_or_else(Tally::default, |(count, first, last)| Tally {
            count: count.max(0) as u64,
            first,
            last,
        }),
    )
}

/// Stores one failure under each key, in one statement.
pub async fn record<C: ConnectionTrait>(
    db: &C,
    keys: &[&str],
    address: &str,
    at: DateTimeUtc,
) -> Result<(), DbErr> {
    Entity::insert_many(keys.iter().map(|key| ActiveModel {
        id: Set(Uuid::now_v7()),
        username: Set((*key).to_owned()),
        address: Set(address.to_owned()),
        at: Set(at),
    }))
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Forgets the failures of a username from one address.
pub async fn forget<C: ConnectionTrait>(
    db: &C,
    username: &str,
    address: &str,
) -> Result<(), DbErr> {
    Entity::delete_many()
        .filter(Column::Username.eq(username))
        .filter(Column::Address.eq(address))
        .exec(db)
        .await?;
    Ok(())
}

/// Deletes failures from before `cutoff`; answers how many.
pub async fn purge_before<C: ConnectionTrait>(db: &C, cutoff: DateTimeUtc) -> Result<u64, DbErr> {
    Ok(Entity::delete_many()
        .filter(Column::At.lt(cutoff))
        .exec(db)
        .await?
        .rows_affected)
}
