//! Opening the database, checking that commits are durable, migrating, and the
//! server's own stored secrets.

use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, EntityTrait,
    Statement, sqlx,
};

use crate::{
    settings::{Settings, SqliteSynchronous},
    store::server_key,
};

/// Prepared statements kept per SQLite connection.
const SQLITE_STATEMENT_CACHE: usize = 24;

/// Bytes the WAL file is cut back to after each reset. Above the size at which the
/// checkpoint task starts the WAL again ([`crate::checkpoint::RESTART_OVER_BYTES`]), so that
/// in steady ingest the file keeps its blocks and the writer writes over them instead of
/// having the file cut and its blocks allocated again after every reset.
const SQLITE_WAL_SIZE_LIMIT: u64 = 256 * 1024 * 1024;

/// Page cache of the writer's SQLite connection, in KiB.
const WRITER_CACHE_KIB: i64 = 64 * 1024;
/// Page size of a new SQLite database (an existing file keeps its own: in WAL mode it cannot
/// change). 8 KiB rather than SQLite's 4 KiB: a coverage pass over a day on disk read the
/// index on time a page at a time (its pages lie between other trees', so the kernel reads
/// nothing ahead), and the kernel's work per read was half of such a rebuild's CPU. On the
/// full worst-case day 8 KiB pages took half the reads and a cold rebuild 16–18 s instead
/// of 22 s; the ingest benchmark was within its run-to-run spread
/// (docs/benchmark-history.md). (Past hours are now read from their packs, and the index
/// on time is gone on SQLite.)
const SQLITE_PAGE_SIZE: u32 = 8192;

/// Begins a transaction that writes. On SQLite it takes the write lock at once
/// (`BEGIN IMMEDIATE`), waiting up to the busy timeout for it. A deferred transaction that
/// reads and then writes fails at once with `SQLITE_BUSY` when another connection wrote in
/// between (its snapshot is stale, and the busy timeout does not apply), which a request
/// would see as a 503. PostgreSQL ignores the mode.
pub async fn begin_write<C: sea_orm::TransactionTrait>(
    db: &C,
) -> Result<C::Transaction, sea_orm::DbErr> {
    db.begin_with_options(sea_orm::TransactionOptions {
        sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

/// Opens the pool. SQLite gets WAL, the configured `synchronous`, foreign keys and a busy
/// timeout on every connection, PostgreSQL a `lock_timeout` of the same length; both
/// backends are then checked for durable commits.
pub async fn connect(settings: &Settings) -> anyhow::Result<DatabaseConnection> {
    open(settings, settings.db_max_connections, None).await
}

/// Where the group-commit writer of fixes writes. On a SQLite file it is a connection of
/// its own on a thread of its own (see [`crate::ingest::sqlite`]), with a large page
/// cache: a group of fixes changes pages all over the fixes table's indexes, and with
/// SQLite's default 2 MiB cache those pages were spilled to the WAL during the transaction
/// and written again at the commit (about 14 KiB written per fix instead of 8, measured),
/// and read again from the file for the next group. It leaves checkpoints to
/// [`connect_checkpointer`]'s connection (see [`crate::checkpoint`]). On PostgreSQL, and
/// for an in-memory SQLite database, it is the pool itself.
pub fn writer_target(settings: &Settings, pool: &DatabaseConnection) -> crate::ingest::Target {
    match writer_options(settings, WRITER_CACHE_KIB) {
        Some(options) => crate::ingest::Target::SqliteFile(options),
        None => crate::ingest::Target::Orm(pool.clone()),
    }
}

/// A writing connection of its own on a SQLite file, with a page cache of `cache_kib`: the
/// check-in writer's (see [`writer_target`]) and the packer's (see [`crate::packs`]).
/// `None` unless the database is a SQLite file.
pub fn writer_options(
    settings: &Settings,
    cache_kib: i64,
) -> Option<crate::ingest::sqlite::Options> {
    sqlite_file(settings).map(|path| crate::ingest::sqlite::Options {
        path,
        synchronous: match settings.sqlite_synchronous {
            SqliteSynchronous::Full => "FULL",
            SqliteSynchronous::Normal => "NORMAL",
        },
        cache_kib,
        journal_size_limit: SQLITE_WAL_SIZE_LIMIT,
        busy_timeout_ms: u64::try_from(settings.db_lock_timeout.as_millis()).unwrap_or(u64::MAX),
    })
}

/// The connection of the WAL checkpointer (see [`crate::checkpoint`]): `None` unless the
/// database is a SQLite file.
pub async fn connect_checkpointer(
    settings: &Settings,
) -> anyhow::Result<Option<DatabaseConnection>> {
    if sqlite_file(settings).is_none() {
        return Ok(None);
    }
    Ok(Some(open(settings, 1, None).await?))
}

/// The database file when the database is a SQLite file (not PostgreSQL, not in memory):
/// the writer, the checkpoint task and the bulk reads then get connections of their own.
pub fn sqlite_file(settings: &Settings) -> Option<std::path::PathBuf> {
    if settings.is_postgres() {
        return None;
    }
    crate::ingest::sqlite::path_of_url(&settings.database_url.0)
}

async fn open(
    settings: &Settings,
    max_connections: u32,
    cache_kib: Option<i64>,
) -> anyhow::Result<DatabaseConnection> {
    let url = &settings.database_url.0;
    if !(url.starts_with("sqlite:") || settings.is_postgres()) {
        bail!("the database URL must start with sqlite: or postgres://");
    }
    let mut options = ConnectOptions::new(url.clone());
    options
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    let synchronous = settings.sqlite_synchronous;
    let lock_timeout = settings.db_lock_timeout;
    // A statement waiting for a lock gives up after the same time on both backends, and the
    // request is answered 503 `database_busy` (see `crate::error`). On PostgreSQL this is a
    // startup option, as sea-orm sends its `statement_timeout`.
    options.map_sqlx_postgres_opts(move |opts| {
        opts.options([("lock_timeout", lock_timeout.as_millis().to_string())])
    });
    if settings.is_postgres() {
        // Each new connection's socket gets TCP_NODELAY, which sqlx does not set (see
        // `crate::nodelay`). This replaces sea-orm's own per-connection hook, which it uses
        // only for a schema search path (never set here).
        let peers = std::sync::Arc::new(crate::nodelay::database_peers(url).await);
        options.map_sqlx_postgres_pool_opts(move |opts| {
            let peers = std::sync::Arc::clone(&peers);
            opts.after_connect(move |_, _| {
                let set = crate::nodelay::set_towards(&peers);
                tracing::debug!(sockets = set, "TCP_NODELAY set towards the database");
                Box::pin(async { Ok(()) })
            })
        });
    }
    options.map_sqlx_sqlite_opts(move |opts| {
        let opts = match cache_kib {
            // A negative cache_size is in KiB.
            Some(kib) => opts.pragma("cache_size", (-kib).to_string()),
            None => opts,
        };
        // Sent before journal_mode, as sqlx orders its pragmas: once in WAL it is ignored.
        opts.page_size(SQLITE_PAGE_SIZE)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(match synchronous {
                SqliteSynchronous::Full => sqlx::sqlite::SqliteSynchronous::Full,
                SqliteSynchronous::Normal => sqlx::sqlite::SqliteSynchronous::Normal,
            })
            .foreign_keys(true)
            .busy_timeout(lock_timeout)
            .create_if_missing(true)
            // Prepared statements are kept per connection. Some of ours are large (a
            // coverage read names thousands of members), and a hundred of those per
            // connection held hundreds of MiB; the frequent small ones fit in a few.
            .statement_cache_capacity(SQLITE_STATEMENT_CACHE)
            // After the WAL is reset, its file is cut back to this size. Long reads (a day's
            // coverage) can hold off the reset while a heavy ingest goes on, and the file,
            // once grown, would otherwise keep its largest size for good.
            .pragma("journal_size_limit", SQLITE_WAL_SIZE_LIMIT.to_string())
    });
    let db = Database::connect(options)
        .await
        .with_context(|| format!("connecting to {}", settings.database_url_redacted()))?;
    check_durability(&db, settings).await?;
    Ok(db)
}

/// Reads the durability settings back from the database and refuses weaker ones.
pub async fn check_durability(db: &DatabaseConnection, settings: &Settings) -> anyhow::Result<()> {
    match db.get_database_backend() {
        DbBackend::Sqlite => {
            let journal = pragma(db, "journal_mode").await?;
            if !journal.eq_ignore_ascii_case("wal") {
                bail!("SQLite journal_mode is {journal}, not wal");
            }
            let sync = pragma(db, "synchronous").await?;
            let want = match settings.sqlite_synchronous {
                SqliteSynchronous::Full => "2",
                SqliteSynchronous::Normal => "1",
            };
            if sync != want {
                bail!("SQLite synchronous is {sync}, not {want} as configured");
            }
            let fk = pragma(db, "foreign_keys").await?;
            if fk != "1" {
                bail!("SQLite foreign_keys is {fk}, not on");
            }
            let busy = pragma(db, "busy_timeout").await?;
            if busy.parse::<u64>().unwrap_or(0) == 0 {
                bail!("SQLite busy_timeout is not set");
            }
        }
        DbBackend::Postgres => {
            for name in ["fsync", "synchronous_commit"] {
                let value = show(db, name).await?;
                if value.eq_ignore_ascii_case("off") {
                    if settings.allow_unsafe_durability {
                        tracing::warn!(
                            setting = name,
                            "PostgreSQL {name} is off: acknowledged data may be lost on a crash"
                        );
                    } else {
                        bail!(
                            "PostgreSQL {name} is off, so acknowledged check-ins could be lost; \
                             turn it on or set PATROL_ALLOW_UNSAFE_DURABILITY=true"
                        );
                    }
                }
            }
        }
        other => bail!("unsupported database backend {other:?}"),
    }
    Ok(())
}

async fn pragma(db: &DatabaseConnection, name: &str) -> anyhow::Result<String> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            format!("PRAGMA {name}"),
        ))
        .await?
        .with_context(|| format!("PRAGMA {name} returned nothing"))?;
    if let Ok(v) = row.try_get_by_index::<String>(0) {
        return Ok(v);
    }
    Ok(row.try_get_by_index::<i64>(0)?.to_string())
}

async fn show(db: &DatabaseConnection, name: &str) -> anyhow::Result<String> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SHOW {name}"),
        ))
        .await?
        .with_context(|| format!("SHOW {name} returned nothing"))?;
    Ok(row.try_get_by_index::<String>(0)?)
}

/// Applies every pending migration. On PostgreSQL the processes that start at once on a
/// new database take turns: the first applies the migrations, the others wait for it and
/// then find none pending.
pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    let turn = match db.get_database_backend() {
        DbBackend::Postgres => Some(migration_turn(db).await?),
        _ => None,
    };
    let applied = Migrator::up(db, None).await.context("applying migrations");
    if let Some(conn) = turn {
        // Ending the session lets the lock go (as it does if this process dies first).
        sqlx::Connection::close(conn).await.ok();
    }
    applied
}

/// A connection of its own, outside the pool, holding the session-level advisory lock of
/// the migrations: the pool applies them, one migration a transaction, so no transaction
/// of its could hold the lock throughout, and a pool of one connection could not lend a
/// second.
async fn migration_turn(db: &DatabaseConnection) -> anyhow::Result<sqlx::PgConnection> {
    use sqlx::Connection;
    let options = db.get_postgres_connection_pool().connect_options();
    let mut conn = sqlx::PgConnection::connect_with(&options)
        .await
        .context("connecting to take the migration lock")?;
    // The pool's lock_timeout would give up while another process is still migrating.
    sqlx::Executor::execute(&mut conn, "SET lock_timeout = 0").await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(crate::jobs::MIGRATION_KEY)
        .execute(&mut conn)
        .await
        .context("waiting for another process's migrations")?;
    Ok(conn)
}

/// The pool the job locks are taken on (see [`crate::jobs`]), with `connections`
/// connections at most; for PostgreSQL only.
pub async fn connect_job_locks(
    settings: &Settings,
    connections: u32,
) -> anyhow::Result<DatabaseConnection> {
    open(settings, connections, None).await
}

/// The signing secret to use when the operator gave none: generated once, stored with the
/// data so that tokens survive restarts, and shared by every process on the database.
pub async fn stored_jwt_secret(db: &DatabaseConnection) -> anyhow::Result<String> {
    const NAME: &str = "jwt_secret";
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let fresh = server_key::ActiveModel {
        name: sea_orm::Set(NAME.to_owned()),
        value: sea_orm::Set(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)),
        created_at: sea_orm::Set(chrono::Utc::now()),
    };
    // Two processes starting at once both try; the first insert wins and both read it back.
    server_key::Entity::insert(fresh)
        .on_conflict_do_nothing()
        .exec(db)
        .await?;
    let stored = server_key::Entity::find_by_id(NAME.to_owned())
        .one(db)
        .await?
        .context("stored jwt secret vanished")?;
    Ok(stored.value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Secret;

    #[tokio::test]
    async fn sqlite_without_wal_or_full_sync_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/plain.db?mode=rwc", dir.path().display());
        // A pool opened without our options: rollback journal, synchronous NORMAL… not WAL.
        let plain = Database::connect(&url).await.unwrap();
        plain
            .execute_unprepared("PRAGMA journal_mode=DELETE")
            .await
            .unwrap();
        let settings = Settings {
            database_url: Secret(url.clone()),
            ..Settings::default()
        };
        let err = check_durability(&plain, &settings).await.unwrap_err();
        assert!(err.to_string().contains("journal_mode"), "{err}");
        plain.close().await.unwrap();

        // Our own connection passes, and a mismatch with the configured level is caught.
        let db = connect(&settings).await.unwrap();
        check_durability(&db, &settings).await.unwrap();
        db.close().await.unwrap();
        // A database created by our connection gets our page size; one that already holds
        // data keeps its own.
        let at = |name: &str| Settings {
            database_url: Secret(format!(
                "sqlite://{}/{name}.db?mode=rwc",
                dir.path().display()
            )),
            ..Settings::default()
        };
        let db = connect(&at("fresh")).await.unwrap();
        assert_eq!(pragma(&db, "page_size").await.unwrap(), "8192");
        db.close().await.unwrap();
        let old = Database::connect(format!("sqlite://{}/old.db?mode=rwc", dir.path().display()))
            .await
            .unwrap();
        old.execute_unprepared("PRAGMA journal_mode=WAL; CREATE TABLE t (n INTEGER)")
            .await
            .unwrap();
        assert_eq!(pragma(&old, "page_size").await.unwrap(), "4096");
        old.close().await.unwrap();
        let db = connect(&at("old")).await.unwrap();
        assert_eq!(pragma(&db, "page_size").await.unwrap(), "4096");
        db.close().await.unwrap();
        let one = Settings {
            db_max_connections: 1,
            ..settings.clone()
        };
        let single = connect(&one).await.unwrap();
        single
            .execute_unprepared("PRAGMA synchronous=OFF")
            .await
            .unwrap();
        let err = check_durability(&single, &one).await.unwrap_err();
        assert!(err.to_string().contains("synchronous"), "{err}");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn every_connection_to_postgresql_has_tcp_nodelay() {
        let Some(url) = std::env::var("PATROL_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            eprintln!("PATROL_TEST_DATABASE_URL is not set: this check runs on PostgreSQL only");
            return;
        };
        let peers = crate::nodelay::database_peers(&url).await;
        if peers.is_empty() {
            eprintln!("{url} is not reached over TCP: nothing to check");
            return;
        }
        let settings = Settings {
            database_url: Secret(url),
            db_max_connections: 6,
            ..Settings::default()
        };
        let db = connect(&settings).await.unwrap();
        // Six statements at once make the pool open six connections.
        let sleeps = (0..6).map(|_| db.execute_unprepared("SELECT pg_sleep(0.2)"));
        for r in futures_util::future::join_all(sleeps).await {
            r.unwrap();
        }
        let states = crate::nodelay::states_towards(&peers);
        assert!(states.len() >= 6, "{states:?}");
        assert!(states.iter().all(|&on| on), "{states:?}");
        db.close().await.unwrap();
    }
}
