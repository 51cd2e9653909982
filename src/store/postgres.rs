//! The PostgreSQL backend: a connection pool, its migrations, and the tail that keeps
//! this replica's memory in step with the others'.
//!
//! Every replica's writer takes one transaction-scoped advisory lock per batch
//! ([`Pool::begin_locked`]), so batches commit one at a time across the cluster, as on
//! SQLite: exactly-once decisions (refresh rotation, code redemption, the bootstrap
//! key) stay plain check-then-write code, and `change_log.seq` order is commit order.
//! Group commit keeps that affordable: one lock, one round of fsync, per batch.
//!
//! The tail follows `change_log`: it LISTENs for the NOTIFY each writer sends after a
//! batch that appended to it, and also polls every [`POLL`], reading the rows after the last one it broadcast. A
//! lost notification therefore delays a change by at most one poll and never loses
//! it; after a reconnect the tail reads everything it missed, by sequence.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod, Runtime};
use tokio::runtime::Handle;
use tokio_postgres::{AsyncMessage, NoTls};

use super::db::{Db, DbError, PgConn};
use super::{Health, changes, set_health};
use crate::error::{Error, Result};

/// The advisory locks of one deployment. Advisory locks are per database, so their
/// keys are derived from the schema the state lives in: deployments in different
/// schemas of one database never wait on each other.
#[derive(Debug)]
struct Locks {
    /// Taken per write batch (transaction-scoped): see [`Pool::begin_locked`].
    begin_locked: String,
    /// Held (session-scoped) while migrations run, so replicas starting together
    /// migrate once.
    migration: i64,
    /// Held (session-scoped) by the one replica that runs scheduled work: purges and
    /// scheduled signing-key rotation.
    scheduler: i64,
}

impl Locks {
    fn for_schema(schema: &str) -> Locks {
        let key = |role: &str| lock_key(&format!("tessera/{schema}/{role}"));
        Locks {
            begin_locked: format!("BEGIN; SELECT pg_advisory_xact_lock({})", key("write")),
            migration: key("migrate"),
            scheduler: key("scheduler"),
        }
    }
}

/// FNV-1a, 64 bits: the same key from every build and every replica (std's hasher
/// promises neither).
fn lock_key(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// The channel every writer notifies after a batch that appended to the change log.
const CHANNEL: &str = "tessera_changes";

/// Sent by the writer after such a batch's COMMIT.
pub(super) const NOTIFY: &str = "NOTIFY tessera_changes";

/// How often the tail reads the log without being woken: the bound on how long a lost
/// notification can delay a change.
const POLL: Duration = Duration::from_millis(250);

/// Numbered migrations; the version applied is kept in `schema_version`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/postgres/0001_init.sql"),
    include_str!("migrations/postgres/0002_drop_family_jti_index.sql"),
];

/// Connections per replica: the writer's, a few readers', and room for bursts.
const POOL_SIZE: usize = 8;

/// How long a replica waits for a connection (or for the server to answer one)
/// before a call answers `UNAVAILABLE`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The URL's host, port and database, never its user or password.
fn describe(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}:{port}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// A pool of connections to one database, with the runtime that drives them.
#[derive(Clone)]
pub(super) struct Pool {
    pool: deadpool_postgres::Pool,
    config: Arc<tokio_postgres::Config>,
    rt: Handle,
    describe: Arc<str>,
    locks: Arc<Locks>,
    /// The connection holding the scheduler lock, once this replica has it. The lock
    /// lives as long as the connection: if this replica dies or loses the database,
    /// another takes over at its next try.
    scheduler: Arc<tokio::sync::Mutex<Option<tokio_postgres::Client>>>,
}

impl Pool {
    /// Parses `url`, connects and migrates. Fails naming the server (never the
    /// password) when it cannot. Blocks: call it off the runtime's worker threads
    /// (every PostgreSQL call here does, see `store/db.rs`).
    pub(super) fn connect(url: &str) -> Result<Pool> {
        let mut config = tokio_postgres::Config::from_str(url).map_err(|_| {
            Error::internal("database_url: not a valid postgres:// URL".to_string())
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("tessera");
        let describe: Arc<str> = describe(&config).into();
        let rt = Handle::try_current()
            .map_err(|_| Error::internal("the PostgreSQL store needs a Tokio runtime"))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(Error::internal)?;
        let pool = Pool {
            pool,
            config: Arc::new(config),
            rt,
            describe: describe.clone(),
            // Replaced below, once the schema is known.
            locks: Arc::new(Locks::for_schema("")),
            scheduler: Arc::default(),
        };
        let named = |e: Error| match e {
            Error::Internal(cause) => Error::internal(format!("database {describe}: {cause}")),
            Error::Unavailable => Error::internal(format!(
                "database {describe}: cannot connect (is it running and reachable?)"
            )),
            other => other,
        };
        let schema: Option<String> = pool
            .with(|db| {
                Ok(
                    db.query_row("SELECT current_schema()", super::db::params![], |r| {
                        r.get(0)
                    })?,
                )
            })
            .map_err(named)?;
        let Some(schema) = schema else {
            return Err(Error::internal(format!(
                "database {describe}: no schema to work in (does the search_path name one that exists?)"
            )));
        };
        let pool = Pool {
            locks: Arc::new(Locks::for_schema(&schema)),
            ..pool
        };
        pool.with(|db| migrate(db, pool.locks.migration))
            .map_err(named)?;
        Ok(pool)
    }

    /// Whether this replica runs the scheduled work now: it holds the scheduler lock,
    /// or has just taken it. Async: called from the maintenance task.
    pub(super) async fn leads(&self) -> bool {
        let mut held = self.scheduler.lock().await;
        if held.as_ref().is_some_and(|c| !c.is_closed()) {
            return true;
        }
        *held = None;
        let Ok((client, conn)) = self.config.connect(NoTls).await else {
            return false;
        };
        tokio::spawn(conn);
        let took = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&self.locks.scheduler])
            .await
            .is_ok_and(|r| r.get::<_, bool>(0));
        if took {
            tracing::info!(database = %self.describe, "this replica runs the scheduled work");
            *held = Some(client);
        }
        took
    }

    /// Gives the scheduler lock up (at shutdown), so another replica takes over now.
    async fn release_scheduler(&self) {
        self.scheduler.lock().await.take();
    }

    /// Opens a write batch: a transaction holding this deployment's write lock.
    pub(super) fn begin_locked(&self) -> &str {
        &self.locks.begin_locked
    }

    /// The server and database, for messages.
    pub(super) fn describe(&self) -> &str {
        &self.describe
    }

    /// A connection for the calling (blocking) thread.
    pub(super) fn take(&self) -> Result<PgConn> {
        let client = self.rt.block_on(self.pool.get()).map_err(|e| {
            tracing::error!(database = %self.describe, error = %e, "no database connection");
            Error::from(DbError::Connect(e.to_string()))
        })?;
        Ok(PgConn {
            client,
            rt: self.rt.clone(),
        })
    }

    /// Runs `f` on a connection from the pool, on the calling (blocking) thread.
    pub(super) fn with<R>(&self, f: impl FnOnce(&Db<'_>) -> Result<R>) -> Result<R> {
        let conn = self.take()?;
        f(&Db::Postgres(&conn))
    }
}

fn migrate(db: &Db<'_>, lock: i64) -> Result<()> {
    db.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL);")?;
    db.query_row(
        "SELECT pg_advisory_lock(?1)",
        super::db::params![lock],
        |_| Ok(()),
    )?;
    let applied = apply_migrations(db);
    let unlocked = db.query_row(
        "SELECT pg_advisory_unlock(?1)",
        super::db::params![lock],
        |_| Ok(()),
    );
    applied?;
    Ok(unlocked?)
}

fn apply_migrations(db: &Db<'_>) -> Result<()> {
    let current: i64 = db.query_row(
        "SELECT COALESCE(max(version), 0) FROM schema_version",
        super::db::params![],
        |r| r.get(0),
    )?;
    if let Some(e) = super::newer_than_binary(current, MIGRATIONS.len()) {
        return Err(e);
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        db.execute_batch("BEGIN")?;
        let step = db.execute_batch(sql).and_then(|()| {
            db.execute_batch(&format!(
                "DELETE FROM schema_version; INSERT INTO schema_version VALUES ({})",
                i + 1
            ))
        });
        match step {
            Ok(()) => db.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = db.execute_batch("ROLLBACK");
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// How long since this replica last read the shared change log, to bound how stale an
/// answer from memory may be while the database is unreachable.
#[derive(Clone, Debug)]
pub(crate) struct Staleness {
    /// Milliseconds since `epoch` of the last successful read; `u64::MAX`: never stale.
    synced_ms: Arc<AtomicU64>,
    epoch: Instant,
}

impl Staleness {
    /// For a store that cannot fall behind (SQLite: every change is this process's).
    pub(super) fn never() -> Staleness {
        Staleness {
            synced_ms: Arc::new(AtomicU64::new(u64::MAX)),
            epoch: Instant::now(),
        }
    }

    /// In step as of now.
    pub(super) fn new() -> Staleness {
        let s = Staleness {
            synced_ms: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
        };
        s.synced();
        s
    }

    fn synced(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.synced_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Whether this replica has gone longer than `max` without reading the log.
    pub(crate) fn exceeds(&self, max: Duration) -> bool {
        let synced = self.synced_ms.load(Ordering::Relaxed);
        if synced == u64::MAX {
            return false;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        now.saturating_sub(synced) > max.as_millis() as u64
    }
}

/// Starts the tail: LISTEN on its own connection, read the log on every wake-up and
/// every [`POLL`], broadcast what other replicas committed, and reconnect with
/// backoff when the connection breaks.
pub(super) fn spawn_tail(pool: Pool, feed: changes::Feed, health: Health, staleness: Staleness) {
    let rt = pool.rt.clone();
    let mut closing = feed.closing();
    rt.spawn(async move {
        tokio::select! {
            () = tail(&pool, &feed, &health, &staleness) => {}
            _ = closing.wait_for(|c| *c) => {}
        }
        // Shutting down: this replica stops following, and lets another lead.
        pool.release_scheduler().await;
    });
}

async fn tail(pool: &Pool, feed: &changes::Feed, health: &Health, staleness: &Staleness) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match listen(pool).await {
            Ok((_client, mut woken)) => {
                backoff = Duration::from_millis(100);
                loop {
                    if catch_up(pool, feed, staleness).await.is_err() {
                        break;
                    }
                    tokio::select! {
                        w = woken.recv() => if w.is_none() { break },
                        _ = tokio::time::sleep(POLL) => {}
                    }
                }
                tracing::warn!(database = %pool.describe, "change-log tail lost its connection; reconnecting");
            }
            Err(e) => {
                tracing::error!(database = %pool.describe, error = %e, "change-log tail cannot connect");
                set_health(health, false);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// A connection listening on [`CHANNEL`], and a receiver that hears `()` per
/// notification and closes when the connection does. The connection lives as long as
/// the client returned.
async fn listen(
    pool: &Pool,
) -> std::result::Result<
    (tokio_postgres::Client, tokio::sync::mpsc::Receiver<()>),
    tokio_postgres::Error,
> {
    let (client, mut conn) = pool.config.connect(NoTls).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while let Some(msg) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            match msg {
                Ok(AsyncMessage::Notification(_)) => {
                    // Full: a wake-up is already pending, which covers this one.
                    let _ = tx.try_send(());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok((client, rx))
}

/// Reads and broadcasts what was committed since the last broadcast.
async fn catch_up(pool: &Pool, feed: &changes::Feed, staleness: &Staleness) -> Result<()> {
    let (pool2, feed2) = (pool.clone(), feed.clone());
    let read = tokio::task::spawn_blocking(move || pool2.with(|db| feed2.publish_committed(db)))
        .await
        .map_err(Error::internal)?;
    match read {
        Ok(_) => {
            staleness.synced();
            Ok(())
        }
        Err(e) => {
            tracing::warn!(database = %pool.describe, error = %e, "change-log tail cannot read");
            Err(e)
        }
    }
}
