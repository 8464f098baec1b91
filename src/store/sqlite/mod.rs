//! The SQLite backend: one file in WAL mode, mode 0600, `synchronous=FULL` so that a batch the
//! site acknowledged to a relay survives a power cut. One writer connection (SQLite has one
//! writer at a time anyway; `BEGIN IMMEDIATE` takes the lock up front so two processes never
//! deadlock upgrading a read lock); a pool of read-only connections for reports.
//!
//! Checkpoints (copying the WAL back into the database file) run on a connection of their own,
//! after each committed batch, instead of inside the writer's commit: a batch is several MiB,
//! so SQLite's automatic checkpoint would otherwise copy and fsync it on the writer's path every
//! time. A checkpoint running beside the writer cannot always finish (the writer keeps adding
//! frames), so when the WAL has grown past [`WAL_LIMIT_FRAMES`] the writer waits for a full
//! checkpoint before its next batch, which lets the WAL start over from its beginning.
//!
//! - `write`: one forwarded batch as one `BEGIN IMMEDIATE` transaction of multi-row statements.
//! - `retention`: deleting aged data in bounded batches, and the leased run lock.
//! - `compliance`, `reads`: where a report and its setting results are, by message id.
//!
//! SQL both dialects can say is not here but in the store's area files (see [`crate::store`]).

mod compliance;
mod reads;
mod retention;
pub(crate) mod write;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::mpsc;

use crate::store::StoreError;
use crate::store::migrate::{RECORDED_SCHEMA, check_schema, embedded, migrator};

/// WAL frames (pages) past which the writer checkpoints before writing on: 16 Ki frames of
/// 16 KiB pages keep the WAL file under ~256 MiB.
pub const WAL_LIMIT_FRAMES: i64 = 16_384;

/// Page size of new databases. A report row carries ~2 KB of signed bytes: with SQLite's 4 KiB
/// default a page holds one or two of them, and the writer ran ~30% slower (measured with
/// `mprelay bench writer`). Existing databases keep the page size they were made with.
const PAGE_SIZE: u32 = 16_384;

#[derive(Clone, Debug)]
pub struct SqliteStore {
    path: PathBuf,
    pub(super) writer: SqlitePool,
    pub(super) reader: SqlitePool,
    checkpoints: Arc<Checkpoints>,
}

/// The background checkpointer's side of the store: the writer pokes it after each commit.
#[derive(Debug)]
struct Checkpoints {
    /// Capacity one: pokes while a checkpoint runs fold into one more run.
    poke: mpsc::Sender<()>,
    /// Frames in the WAL as of the last checkpoint.
    wal_frames: AtomicI64,
    pool: SqlitePool,
}

/// Runs a passive checkpoint after each poke, until the store is gone or closed.
async fn checkpoint_loop(store: std::sync::Weak<Checkpoints>, mut pokes: mpsc::Receiver<()>) {
    while pokes.recv().await.is_some() {
        let Some(c) = store.upgrade() else { break };
        match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&c.pool)
            .await
        {
            Ok((_, frames, _)) => c.wal_frames.store(frames, Ordering::Relaxed),
            Err(sqlx::Error::PoolClosed) => break,
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; the next one retries"),
        }
    }
}

impl SqliteStore {
    pub async fn open(path: &str) -> Result<Self, StoreError> {
        let url = format!("sqlite://{path}");
        let open_err = |cause| StoreError::Open {
            url: url.clone(),
            cause,
        };
        let p = Path::new(path);
        crate::fsutil::create_private(p).map_err(|e| open_err(sqlx::Error::Io(e)))?;
        let opts = SqliteConnectOptions::from_str(&url)
            .map_err(open_err)?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .page_size(PAGE_SIZE)
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "memory")
            .pragma("wal_autocheckpoint", "0");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .connect_with(opts.clone())
            .await
            .map_err(open_err)?;
        {
            // sqlx does not lock SQLite while migrating: two processes opening a new database at
            // once would both try to create its tables. A lock file beside it serialises them.
            let lock_path = p.with_extension("migrate.lock");
            let lock =
                tokio::task::spawn_blocking(move || crate::fsutil::lock_exclusive(&lock_path))
                    .await
                    .map_err(|e| open_err(sqlx::Error::Io(std::io::Error::other(e))))?
                    .map_err(|e| open_err(sqlx::Error::Io(e)))?;
            migrator(embedded::SQLITE).run(&writer).await?;
            drop(lock);
        }
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts.clone().read_only(true))
            .await
            .map_err(open_err)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .map_err(open_err)?;
        let (poke, rx) = mpsc::channel(1);
        let checkpoints = Arc::new(Checkpoints {
            poke,
            wal_frames: AtomicI64::new(0),
            pool,
        });
        tokio::spawn(checkpoint_loop(Arc::downgrade(&checkpoints), rx));
        Ok(Self {
            path: p.to_path_buf(),
            writer,
            reader,
            checkpoints,
        })
    }

    /// Opens an existing database with read-only connections and no checkpointer, after
    /// checking its schema is this binary's (see [`crate::store::Store::open_read_only`]).
    pub async fn open_read_only(path: &str) -> Result<Self, StoreError> {
        let url = format!("sqlite://{path}");
        let open_err = |cause| StoreError::Open {
            url: url.clone(),
            cause,
        };
        let opts = SqliteConnectOptions::from_str(&url)
            .map_err(open_err)?
            .create_if_missing(false)
            .read_only(true)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(open_err)?;
        let has_table: bool = sqlx::query_scalar(
            "SELECT COUNT(*) > 0 FROM sqlite_master WHERE name = '_sqlx_migrations'",
        )
        .fetch_one(&pool)
        .await?;
        let recorded = match has_table {
            true => Some(sqlx::query_as(RECORDED_SCHEMA).fetch_one(&pool).await?),
            false => None,
        };
        check_schema(&url, recorded, embedded::SQLITE)?;
        // Writes through this store fail: every connection is read-only.
        let (poke, _) = mpsc::channel(1);
        Ok(Self {
            path: PathBuf::from(path),
            writer: pool.clone(),
            reader: pool.clone(),
            checkpoints: Arc::new(Checkpoints {
                poke,
                wal_frames: AtomicI64::new(0),
                pool,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The single writer connection, for sibling modules of the store.
    /// A transaction that changes what the policy holds: `BEGIN IMMEDIATE` takes the write lock
    /// up front, which serialises such changes across processes.
    pub(crate) async fn begin_policy_change(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        self.begin_write().await
    }

    /// A write transaction on the writer connection, taking the write lock up front.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// A read transaction: everything it reads comes from one snapshot.
    pub(crate) async fn snapshot(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.reader.begin().await?)
    }

    /// The pool of read-only connections reads go to.
    pub(crate) fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    pub(crate) fn writer_pool(&self) -> &SqlitePool {
        &self.writer
    }

    pub async fn close(&self) {
        // The last connection to close checkpoints the WAL and removes it.
        self.writer.close().await;
        self.reader.close().await;
        self.checkpoints.pool.close().await;
    }

    /// Bounds the WAL before a write transaction (see the module doc).
    pub(crate) async fn before_write(&self) -> Result<(), StoreError> {
        if self.checkpoints.wal_frames.load(Ordering::Relaxed) > WAL_LIMIT_FRAMES {
            // Waits for the background checkpoint and readers, copies what is left, and makes
            // the next write start the WAL over.
            sqlx::query("PRAGMA wal_checkpoint(RESTART)")
                .execute(&self.writer)
                .await?;
            self.checkpoints.wal_frames.store(0, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Asks for a checkpoint of what a write transaction committed.
    pub(crate) fn after_write(&self) {
        // Full means a checkpoint is already pending, which will take this write too.
        let _ = self.checkpoints.poke.try_send(());
    }
}
