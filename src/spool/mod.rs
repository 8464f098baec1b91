//! The relay's durable spool (DESIGN section 5): a SQLite database in WAL mode, mode 0600, owned
//! by one relay process.
//!
//! # On-disk invariants
//! - `records(seq INTEGER PRIMARY KEY, message_id BLOB UNIQUE, accepted_ms, size, payload)`.
//!   `seq` is assigned by the single writer, strictly increasing, never reused: the writer starts
//!   from `max(max(seq), acked_through)` and pruning never deletes the row at `acked_through`.
//! - `payload` is an encoded `ForwardRecord` without its `seq` field; prepending the seq field
//!   gives the record as the site receives it. It is set to NULL once the site acknowledged it;
//!   the row (message id and acceptance time) stays for the dedup window so that a resend is
//!   answered 200 with the original receipt, then pruning deletes it.
//! - `meta` holds `spool_id` (a UUID made when the file is created: the site resets its cursor when
//!   it changes) and `acked_through` (everything at or below it is committed at the site).
//! - `policy` holds the last policy snapshot the site pushed (one row).
//! - A record is answered 202 only after the transaction that inserted it committed with
//!   `synchronous=FULL`, i.e. after the WAL was fsynced.
//!
//! # Group commit
//! Request handlers send their record to one writer task and wait. The writer takes every record
//! queued at that moment (up to `max_batch`), sends `BEGIN; INSERT … VALUES (…), (…) … RETURNING
//! seq; COMMIT` to SQLite's worker thread as one statement batch (one round trip, so one pair of
//! cross-thread wake-ups per group, not per statement), then answers them all. Under load,
//! groups grow by themselves: everything that arrived while one commit was running goes into
//! the next.
//!
//! # Checkpoints
//! The writer's connection never checkpoints (`wal_autocheckpoint=0`), so no commit waits for
//! the WAL to be copied back. A checkpointer task on its own connection runs a `PASSIVE`
//! checkpoint beside the writer every few MiB committed; when the WAL still holds more than
//! `WAL_RESTART_FRAMES` uncopied frames (background checkpoints seldom catch up fully under
//! sustained load), the writer runs one `RESTART` checkpoint between two groups. New spools use
//! 16 KiB pages, which pack several 2–3 KB records per page.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::ids::MessageId;
use crate::proto::{ForwardBatch, ForwardRecord, PolicySnapshot};

/// Why the spool refused or failed an operation.
#[derive(Debug, Error)]
pub enum SpoolError {
    /// The spool file could not be opened or is not a spool (corrupt, wrong format, no access).
    #[error("cannot open spool {path}: {why}")]
    Open { path: PathBuf, why: String },
    /// Accepting this record would exceed the configured size bound.
    #[error("spool is full")]
    Full,
    /// A database operation failed after the spool was opened.
    #[error("spool storage error: {0}")]
    Storage(#[from] sqlx::Error),
    /// The writer task is gone (the relay is shutting down).
    #[error("spool is closed")]
    Closed,
    /// An acknowledgement named another spool.
    #[error("acknowledgement is for spool {got}, this spool is {expected}")]
    WrongSpool { expected: String, got: String },
}

/// Spool settings.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub path: PathBuf,
    /// Bound on the bytes of unacknowledged payloads.
    pub max_bytes: u64,
    /// Bound on the number of unacknowledged records.
    pub max_records: u64,
    /// How long an acknowledged message id is remembered to answer resends with 200.
    pub dedup_window: Duration,
    /// Most records committed in one transaction.
    pub max_batch: usize,
    /// Run `PRAGMA quick_check` when opening.
    pub verify_on_open: bool,
}

impl SpoolConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_bytes: 2 * 1024 * 1024 * 1024,
            max_records: 2_000_000,
            dedup_window: Duration::from_secs(7 * 86_400),
            max_batch: 2048,
            verify_on_open: true,
        }
    }
}

/// A record to append: its idempotency key and its encoded `ForwardRecord` (without seq).
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub message_id: MessageId,
    pub accepted_ms: i64,
    pub payload: Vec<u8>,
}

/// The outcome of an append that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored durably for the first time.
    New { seq: u64, accepted_ms: i64 },
    /// The message id was already in the spool; nothing was written.
    Duplicate { accepted_ms: i64 },
}

/// Live counters of the spool.
#[derive(Debug, Default)]
pub struct SpoolStats {
    pub pending_records: AtomicU64,
    pub pending_bytes: AtomicU64,
    pub last_seq: AtomicU64,
    pub acked_through: AtomicU64,
    pub batches: AtomicU64,
    pub batched_records: AtomicU64,
    pub duplicates: AtomicU64,
}

/// Sizes of committed batches, for the metrics histogram.
pub const BATCH_SIZE_BUCKETS: [u64; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024];

enum Op {
    Append(NewRecord, oneshot::Sender<Result<Appended, SpoolError>>),
    Ack(u64, oneshot::Sender<Result<u64, SpoolError>>),
    SavePolicy(Vec<u8>, u64, oneshot::Sender<Result<(), SpoolError>>),
    Close(oneshot::Sender<()>),
}

/// Handle to an open spool; cheap to clone.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    ops: mpsc::Sender<Op>,
    reader: SqlitePool,
    spool_id: String,
    stats: Arc<SpoolStats>,
    batch_hist: Arc<[AtomicU64; BATCH_SIZE_BUCKETS.len() + 1]>,
    last_seq: watch::Receiver<u64>,
    writer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    checkpointer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    stop_checkpointer: watch::Sender<bool>,
}

impl Spool {
    /// Opens (creating if needed, with mode 0600) the spool at `cfg.path`.
    pub async fn open(cfg: SpoolConfig) -> Result<Self, SpoolError> {
        let path = cfg.path.clone();
        let open_err = |why: String| SpoolError::Open {
            path: path.clone(),
            why,
        };
        crate::fsutil::create_private(&path).map_err(|e| open_err(e.to_string()))?;
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|e| open_err(e.to_string()))?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .pragma("cache_size", "-16384")
            // New spools only (a page size is fixed when the file is made): a 2–3 KB record
            // fills most of a 4 KiB page, so every record cost a page of WAL and a page of
            // checkpoint; 16 KiB pages pack six, halving both.
            .page_size(16384)
            // Multi-row INSERTs need a statement journal; in memory it never touches a file.
            .pragma("temp_store", "memory");
        // The writer never checkpoints inside a commit; the checkpointer does it beside it.
        let writer_opts = opts.clone().pragma("wal_autocheckpoint", "0");
        let mut conn = SqliteConnection::connect_with(&writer_opts)
            .await
            .map_err(|e| open_err(describe_open_error(&e)))?;
        if cfg.verify_on_open {
            let row = sqlx::query("PRAGMA quick_check")
                .fetch_one(&mut conn)
                .await
                .map_err(|e| open_err(describe_open_error(&e)))?;
            let verdict: String = row.try_get(0).unwrap_or_default();
            if verdict != "ok" {
                return Err(open_err(format!("integrity check failed: {verdict}")));
            }
        }
        migrate(&mut conn)
            .await
            .map_err(|e| open_err(describe_open_error(&e)))?;

        let spool_id = meta_get(&mut conn, "spool_id").await?;
        let spool_id = match spool_id {
            Some(id) => id,
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                meta_set(&mut conn, "spool_id", &id).await?;
                id
            }
        };
        let acked_through: u64 = meta_get(&mut conn, "acked_through")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let max_seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM records")
            .fetch_one(&mut conn)
            .await?;
        let last_seq = (max_seq as u64).max(acked_through);
        let (pending_records, pending_bytes): (i64, i64) =
            sqlx::query_as("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM records WHERE seq > ?")
                .bind(acked_through as i64)
                .fetch_one(&mut conn)
                .await?;

        let stats = Arc::new(SpoolStats::default());
        stats
            .pending_records
            .store(pending_records as u64, Ordering::Relaxed);
        stats
            .pending_bytes
            .store(pending_bytes as u64, Ordering::Relaxed);
        stats.last_seq.store(last_seq, Ordering::Relaxed);
        stats.acked_through.store(acked_through, Ordering::Relaxed);

        let reader = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts.clone().read_only(true))
            .await
            .map_err(|e| open_err(describe_open_error(&e)))?;

        info!(
            path = %path.display(),
            %spool_id,
            pending_records,
            pending_bytes,
            last_seq,
            "spool opened"
        );
        let (tx, rx) = mpsc::channel(cfg.max_batch * 4);
        let (seq_tx, seq_rx) = watch::channel(last_seq);
        let batch_hist: Arc<[AtomicU64; BATCH_SIZE_BUCKETS.len() + 1]> =
            Arc::new(std::array::from_fn(|_| AtomicU64::new(0)));
        let writer = Writer {
            conn,
            cfg,
            stats: stats.clone(),
            batch_hist: batch_hist.clone(),
            next_seq: last_seq + 1,
            seq_tx,
            last_prune: std::time::Instant::now(),
            checkpoints: Arc::new(Checkpoints::default()),
        };
        let checkpoint_conn = SqliteConnection::connect_with(&opts)
            .await
            .map_err(|e| open_err(describe_open_error(&e)))?;
        let (stop_checkpointer, stop_rx) = watch::channel(false);
        let checkpointer = tokio::spawn(checkpointer(
            checkpoint_conn,
            writer.checkpoints.clone(),
            stop_rx,
        ));
        let handle = tokio::spawn(writer.run(rx));
        Ok(Self {
            inner: Arc::new(Inner {
                ops: tx,
                reader,
                spool_id,
                stats,
                batch_hist,
                last_seq: seq_rx,
                writer: std::sync::Mutex::new(Some(handle)),
                checkpointer: std::sync::Mutex::new(Some(checkpointer)),
                stop_checkpointer,
            }),
        })
    }

    pub fn spool_id(&self) -> &str {
        &self.inner.spool_id
    }

    pub fn stats(&self) -> &SpoolStats {
        &self.inner.stats
    }

    /// Committed batch sizes by bucket (`BATCH_SIZE_BUCKETS`, then everything larger).
    pub fn batch_histogram(&self) -> Vec<u64> {
        self.inner
            .batch_hist
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Appends a record and returns once it is durable (or known to be a duplicate).
    pub async fn append(&self, rec: NewRecord) -> Result<Appended, SpoolError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .ops
            .send(Op::Append(rec, tx))
            .await
            .map_err(|_| SpoolError::Closed)?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// Marks everything through `seq` as committed at the site; returns the new acked-through.
    pub async fn ack(&self, spool_id: &str, through: u64) -> Result<u64, SpoolError> {
        if spool_id != self.inner.spool_id {
            return Err(SpoolError::WrongSpool {
                expected: self.inner.spool_id.clone(),
                got: spool_id.into(),
            });
        }
        let (tx, rx) = oneshot::channel();
        self.inner
            .ops
            .send(Op::Ack(through, tx))
            .await
            .map_err(|_| SpoolError::Closed)?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// Records after `after` (and after what was already acknowledged), at most `max` records
    /// and about `max_bytes` bytes, as (seq, payload) pairs.
    pub async fn read_after(
        &self,
        after: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        let from = after.max(self.inner.stats.acked_through.load(Ordering::Relaxed));
        let rows = sqlx::query(
            "SELECT seq, payload FROM records WHERE seq > ? AND payload IS NOT NULL \
             ORDER BY seq LIMIT ?",
        )
        .bind(from as i64)
        .bind(max as i64)
        .fetch_all(&self.inner.reader)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut bytes = 0usize;
        for row in rows {
            let seq: i64 = row.try_get(0)?;
            let payload: Vec<u8> = row.try_get(1)?;
            bytes += payload.len();
            out.push((seq as u64, payload));
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// Waits until a record after `after` is committed, or `wait` passes.
    pub async fn wait_for_after(&self, after: u64, wait: Duration) {
        let mut rx = self.inner.last_seq.clone();
        let _ = tokio::time::timeout(wait, rx.wait_for(|last| *last > after)).await;
    }

    /// Stores the policy snapshot (encoded) the site pushed.
    pub async fn save_policy(&self, version: u64, encoded: Vec<u8>) -> Result<(), SpoolError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .ops
            .send(Op::SavePolicy(encoded, version, tx))
            .await
            .map_err(|_| SpoolError::Closed)?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// The last policy snapshot the site pushed, if any.
    pub async fn load_policy(&self) -> Result<Option<PolicySnapshot>, SpoolError> {
        let body: Option<Vec<u8>> = sqlx::query_scalar("SELECT body FROM policy WHERE id = 1")
            .fetch_optional(&self.inner.reader)
            .await?;
        Ok(
            body.and_then(|b| match PolicySnapshot::decode(b.as_slice()) {
                Ok(p) => Some(p),
                Err(e) => {
                    error!(error = %e, "stored policy snapshot is unreadable; ignoring it");
                    None
                }
            }),
        )
    }

    /// Whether a message id is known to the spool (pending or remembered after ack).
    pub async fn contains(&self, id: &MessageId) -> Result<bool, SpoolError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM records WHERE message_id = ?")
            .bind(id.as_bytes().as_slice())
            .fetch_one(&self.inner.reader)
            .await?;
        Ok(n > 0)
    }

    /// Every message id the spool holds, pending or remembered after acknowledgement (for
    /// audits and the benchmarks).
    pub async fn message_ids(&self) -> Result<std::collections::HashSet<[u8; 16]>, SpoolError> {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar("SELECT message_id FROM records")
            .fetch_all(&self.inner.reader)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
            .collect())
    }

    /// Commits what the writer already took, stops it, and closes the files. Appends still
    /// queued behind the close get [`SpoolError::Closed`] (and so no receipt).
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.ops.send(Op::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let handle = self.inner.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = h.await;
        }
        let _ = self.inner.stop_checkpointer.send(true);
        let handle = self
            .inner
            .checkpointer
            .lock()
            .ok()
            .and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = h.await;
        }
        self.inner.reader.close().await;
    }
}

/// Builds the body of a `ForwardBatch` from stored payloads without re-encoding them: each
/// element is the seq field followed by the stored bytes, which protobuf merges into one
/// `ForwardRecord`.
pub fn encode_forward_batch(header: &ForwardBatch, records: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut out = header.encode_to_vec();
    let extra: usize = records
        .iter()
        .map(|(seq, p)| {
            let inner = 1 + encoded_len_varint(*seq) + p.len();
            1 + encoded_len_varint(inner as u64) + inner
        })
        .sum();
    out.reserve(extra);
    for (seq, payload) in records {
        let inner = 1 + encoded_len_varint(*seq) + payload.len();
        encode_key(3, WireType::LengthDelimited, &mut out);
        encode_varint(inner as u64, &mut out);
        encode_key(1, WireType::Varint, &mut out);
        encode_varint(*seq, &mut out);
        out.extend_from_slice(payload);
    }
    out
}

/// Decodes one stored payload as the site would see it (the spool record reader).
pub fn decode_record(seq: u64, payload: &[u8]) -> Result<ForwardRecord, prost::DecodeError> {
    let mut r = ForwardRecord::decode(payload)?;
    r.seq = seq;
    Ok(r)
}

struct Writer {
    conn: SqliteConnection,
    cfg: SpoolConfig,
    stats: Arc<SpoolStats>,
    batch_hist: Arc<[AtomicU64; BATCH_SIZE_BUCKETS.len() + 1]>,
    next_seq: u64,
    seq_tx: watch::Sender<u64>,
    last_prune: std::time::Instant,
    checkpoints: Arc<Checkpoints>,
}

/// Payload bytes committed between two background checkpoints.
const CHECKPOINT_EVERY_BYTES: u64 = 4 << 20;
/// WAL frames (16 KiB pages: 64 MiB) past which the writer itself checkpoints and restarts the
/// log between two commits. Background checkpoints run beside the commits and rarely catch up
/// fully under sustained load, so without this the WAL would only grow.
const WAL_RESTART_FRAMES: u64 = 4096;

/// What the writer and the checkpointer share.
#[derive(Default)]
struct Checkpoints {
    kick: tokio::sync::Notify,
    committed_bytes: AtomicU64,
    /// Frames in the WAL that the last checkpoint could not yet copy back (0 when it caught up).
    wal_frames: AtomicU64,
}

/// Copies the WAL back into the database beside the writer (`PASSIVE`: never blocks a commit),
/// so that commits never stall on SQLite's automatic checkpoint.
async fn checkpointer(
    mut conn: SqliteConnection,
    shared: Arc<Checkpoints>,
    mut stop: watch::Receiver<bool>,
) {
    let mut done_at = 0u64;
    loop {
        tokio::select! {
            _ = shared.kick.notified() => {}
            _ = stop.changed() => break,
        }
        let now = shared.committed_bytes.load(Ordering::Relaxed);
        if now.saturating_sub(done_at) < CHECKPOINT_EVERY_BYTES {
            continue;
        }
        done_at = now;
        match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut conn)
            .await
        {
            Ok((_, log, copied)) => {
                let left = if log == copied { 0 } else { log.max(0) as u64 };
                shared.wal_frames.store(left, Ordering::Relaxed);
            }
            Err(e) => warn!(error = %e, "background checkpoint failed"),
        }
    }
    let _ = conn.close().await;
}

/// Most records in one group: five bound values each stay well under SQLite's limit of 32,766
/// variables per statement.
const MAX_GROUP: usize = 4096;

/// Ids per duplicate lookup statement.
const MAX_ROWS_PER_INSERT: usize = 256;

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        let mut appends = Vec::with_capacity(self.cfg.max_batch);
        let mut closing = None;
        while let Some(op) = rx.recv().await {
            let mut next = Some(op);
            // Take everything queued right now: that is the group of this commit.
            loop {
                match next.take() {
                    Some(Op::Append(r, tx)) => appends.push((r, tx)),
                    Some(Op::Ack(through, tx)) => {
                        let r = self.ack(through).await;
                        let _ = tx.send(r);
                    }
                    Some(Op::SavePolicy(body, version, tx)) => {
                        let r = self.save_policy(version, body).await;
                        let _ = tx.send(r);
                    }
                    Some(Op::Close(tx)) => closing = Some(tx),
                    None => {}
                }
                if closing.is_some() || appends.len() >= self.cfg.max_batch.min(MAX_GROUP) {
                    break;
                }
                match rx.try_recv() {
                    Ok(op) => next = Some(op),
                    Err(_) => break,
                }
            }
            if self.checkpoints.wal_frames.load(Ordering::Relaxed) > WAL_RESTART_FRAMES {
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(RESTART)")
                    .execute(&mut self.conn)
                    .await
                {
                    warn!(error = %e, "restarting the WAL failed");
                }
                self.checkpoints.wal_frames.store(0, Ordering::Relaxed);
            }
            if !appends.is_empty() {
                self.commit_appends(&mut appends).await;
            }
            if let Some(tx) = closing.take() {
                let _ = self.conn.close_hard().await;
                let _ = tx.send(());
                return;
            }
            if self.last_prune.elapsed() > Duration::from_secs(60) {
                self.last_prune = std::time::Instant::now();
                if let Err(e) = self.prune().await {
                    warn!(error = %e, "pruning acknowledged records failed");
                }
            }
        }
    }

    async fn commit_appends(
        &mut self,
        batch: &mut Vec<(NewRecord, oneshot::Sender<Result<Appended, SpoolError>>)>,
    ) {
        let items: Vec<_> = std::mem::take(batch);
        match self.insert_batch(&items).await {
            Ok(outcomes) => {
                let n = items.len() as u64;
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.stats.batched_records.fetch_add(n, Ordering::Relaxed);
                let bucket = BATCH_SIZE_BUCKETS
                    .iter()
                    .position(|b| n <= *b)
                    .unwrap_or(BATCH_SIZE_BUCKETS.len());
                self.batch_hist[bucket].fetch_add(1, Ordering::Relaxed);
                let bytes: usize = items.iter().map(|(r, _)| r.payload.len()).sum();
                self.checkpoints
                    .committed_bytes
                    .fetch_add(bytes as u64, Ordering::Relaxed);
                self.checkpoints.kick.notify_one();
                let _ = self.seq_tx.send(self.next_seq - 1);
                for ((_, tx), outcome) in items.into_iter().zip(outcomes) {
                    let _ = tx.send(outcome);
                }
            }
            Err(e) => {
                error!(error = %e, records = items.len(), "spool commit failed; nothing was stored");
                let msg = e.to_string();
                for (_, tx) in items {
                    let _ = tx.send(Err(SpoolError::Storage(sqlx::Error::Protocol(msg.clone()))));
                }
            }
        }
    }

    /// Inserts a group in one transaction. Returns one outcome per item, in order.
    async fn insert_batch(
        &mut self,
        items: &[(NewRecord, oneshot::Sender<Result<Appended, SpoolError>>)],
    ) -> Result<Vec<Result<Appended, SpoolError>>, sqlx::Error> {
        let mut pending_records = self.stats.pending_records.load(Ordering::Relaxed);
        let mut pending_bytes = self.stats.pending_bytes.load(Ordering::Relaxed);
        let mut outcomes: Vec<Option<Result<Appended, SpoolError>>> =
            (0..items.len()).map(|_| None).collect();
        let mut next_seq = self.next_seq;

        // Decide what fits under the bound; what does not is refused unless it is a duplicate.
        let mut fits = Vec::with_capacity(items.len());
        let mut overflow = Vec::new();
        for (i, (r, _)) in items.iter().enumerate() {
            let size = r.payload.len() as u64;
            if pending_records < self.cfg.max_records && pending_bytes + size <= self.cfg.max_bytes
            {
                pending_records += 1;
                pending_bytes += size;
                fits.push((i, next_seq));
                next_seq += 1;
            } else {
                overflow.push(i);
            }
        }

        // The whole group is one statement batch — BEGIN, one multi-row INSERT, COMMIT — sent
        // to SQLite's worker thread in one round trip: every extra statement would cost a
        // cross-thread wake-up on each side. COMMIT returns once the WAL is fsynced
        // (synchronous=FULL), and only then are the senders answered.
        let mut inserted = std::collections::HashSet::with_capacity(fits.len());
        if !fits.is_empty() {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "BEGIN IMMEDIATE; INSERT INTO records (seq, message_id, accepted_ms, size, payload) ",
            );
            qb.push_values(&fits, |mut b, (i, seq)| {
                let r = &items[*i].0;
                b.push_bind(*seq as i64)
                    .push_bind(r.message_id.as_bytes().as_slice())
                    .push_bind(r.accepted_ms)
                    .push_bind(r.payload.len() as i64)
                    .push_bind(r.payload.as_slice());
            });
            qb.push(" ON CONFLICT(message_id) DO NOTHING RETURNING seq; COMMIT");
            match qb.build().fetch_all(&mut self.conn).await {
                Ok(rows) => {
                    for row in rows {
                        let seq: i64 = row.try_get(0)?;
                        inserted.insert(seq as u64);
                    }
                }
                Err(e) => {
                    // Whatever failed, leave no transaction open behind it.
                    let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
                    return Err(e);
                }
            }
        }

        // Anything not inserted, and anything over the bound, may be a resend of a known id.
        // This writer is the only one, so reading after the commit sees exactly what it saw.
        let mut lookup: Vec<usize> = fits
            .iter()
            .filter(|(_, seq)| !inserted.contains(seq))
            .map(|(i, _)| *i)
            .collect();
        lookup.extend(overflow.iter().copied());
        let mut known = std::collections::HashMap::new();
        for chunk in lookup.chunks(MAX_ROWS_PER_INSERT) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "SELECT message_id, accepted_ms FROM records WHERE message_id IN (",
            );
            let mut sep = qb.separated(", ");
            for i in chunk {
                sep.push_bind(items[*i].0.message_id.as_bytes().as_slice());
            }
            qb.push(")");
            for row in qb.build().fetch_all(&mut self.conn).await? {
                let id: Vec<u8> = row.try_get(0)?;
                let at: i64 = row.try_get(1)?;
                known.insert(id, at);
            }
        }

        let mut new_records = 0u64;
        let mut new_bytes = 0u64;
        for (i, seq) in &fits {
            let r = &items[*i].0;
            outcomes[*i] = Some(if inserted.contains(seq) {
                new_records += 1;
                new_bytes += r.payload.len() as u64;
                Ok(Appended::New {
                    seq: *seq,
                    accepted_ms: r.accepted_ms,
                })
            } else {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                Ok(Appended::Duplicate {
                    accepted_ms: known
                        .get(r.message_id.as_bytes().as_slice())
                        .copied()
                        .unwrap_or(r.accepted_ms),
                })
            });
        }
        for i in overflow {
            let r = &items[i].0;
            outcomes[i] = Some(match known.get(r.message_id.as_bytes().as_slice()) {
                Some(at) => {
                    self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    Ok(Appended::Duplicate { accepted_ms: *at })
                }
                None => Err(SpoolError::Full),
            });
        }
        // Seqs handed to rows that turned out to be duplicates are not used; only a batch that
        // stored something moves the sequence on.
        if let Some(max) = inserted.iter().max() {
            self.next_seq = max + 1;
            self.stats.last_seq.store(*max, Ordering::Relaxed);
        }
        self.stats
            .pending_records
            .fetch_add(new_records, Ordering::Relaxed);
        self.stats
            .pending_bytes
            .fetch_add(new_bytes, Ordering::Relaxed);
        Ok(outcomes
            .into_iter()
            .map(|o| o.expect("every item got an outcome"))
            .collect())
    }

    async fn ack(&mut self, through: u64) -> Result<u64, SpoolError> {
        let prev = self.stats.acked_through.load(Ordering::Relaxed);
        // A site cannot have committed what was never assigned.
        let through = through.min(self.next_seq - 1);
        if through <= prev {
            return Ok(prev);
        }
        let mut tx = self.conn.begin().await?;
        let (n, bytes): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM records \
             WHERE seq > ? AND seq <= ? AND payload IS NOT NULL",
        )
        .bind(prev as i64)
        .bind(through as i64)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("UPDATE records SET payload = NULL WHERE seq > ? AND seq <= ?")
            .bind(prev as i64)
            .bind(through as i64)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('acked_through', ?) \
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        )
        .bind(through.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.stats.acked_through.store(through, Ordering::Relaxed);
        sub_saturating(&self.stats.pending_records, n as u64);
        sub_saturating(&self.stats.pending_bytes, bytes as u64);
        Ok(through)
    }

    async fn save_policy(&mut self, version: u64, body: Vec<u8>) -> Result<(), SpoolError> {
        sqlx::query(
            "INSERT INTO policy (id, version, body) VALUES (1, ?, ?) \
             ON CONFLICT(id) DO UPDATE SET version = excluded.version, body = excluded.body",
        )
        .bind(version as i64)
        .bind(body)
        .execute(&mut self.conn)
        .await?;
        Ok(())
    }

    /// Forgets acknowledged records older than the dedup window, in bounded steps so intake
    /// never waits long. Keeps the row at `acked_through` so seq never goes backwards.
    async fn prune(&mut self) -> Result<(), SpoolError> {
        let acked = self.stats.acked_through.load(Ordering::Relaxed) as i64;
        let cutoff = crate::clock::now_ms() - self.cfg.dedup_window.as_millis() as i64;
        loop {
            let r = sqlx::query(
                "DELETE FROM records WHERE seq IN (SELECT seq FROM records \
                 WHERE seq < ? AND accepted_ms < ? ORDER BY seq LIMIT 5000)",
            )
            .bind(acked)
            .bind(cutoff)
            .execute(&mut self.conn)
            .await?;
            if r.rows_affected() < 5000 {
                return Ok(());
            }
            tokio::task::yield_now().await;
        }
    }
}

fn sub_saturating(a: &AtomicU64, n: u64) {
    let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

async fn migrate(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await?;
    if version == 0 {
        let mut tx = conn.begin().await?;
        for stmt in [
            "CREATE TABLE IF NOT EXISTS records (
                seq INTEGER PRIMARY KEY,
                message_id BLOB NOT NULL UNIQUE,
                accepted_ms INTEGER NOT NULL,
                size INTEGER NOT NULL,
                payload BLOB
            )",
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS policy (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                version INTEGER NOT NULL,
                body BLOB NOT NULL
            )",
            "PRAGMA user_version = 1",
        ] {
            sqlx::query(stmt).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    } else if version != 1 {
        return Err(sqlx::Error::Protocol(format!(
            "spool format version {version} is not supported by this build (expected 1)"
        )));
    }
    Ok(())
}

async fn meta_get(conn: &mut SqliteConnection, key: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
        .bind(key)
        .fetch_optional(conn)
        .await
}

async fn meta_set(conn: &mut SqliteConnection, key: &str, value: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO meta (key, value) VALUES (?, ?) \
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )
    .bind(key)
    .bind(value)
    .execute(conn)
    .await?;
    Ok(())
}

fn describe_open_error(e: &sqlx::Error) -> String {
    let s = e.to_string();
    if s.contains("not a database") || s.contains("malformed") {
        format!("the file is not a readable spool database ({s})")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn rec(payload: &[u8]) -> NewRecord {
        NewRecord {
            message_id: MessageId::new(),
            accepted_ms: crate::clock::now_ms(),
            payload: payload.to_vec(),
        }
    }

    async fn open(dir: &Path) -> Spool {
        Spool::open(SpoolConfig::new(dir.join("spool.db")))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn append_is_durable_and_seq_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        let a = s.append(rec(b"a")).await.unwrap();
        let b = s.append(rec(b"b")).await.unwrap();
        assert!(matches!(a, Appended::New { seq: 1, .. }));
        assert!(matches!(b, Appended::New { seq: 2, .. }));
        let id = s.spool_id().to_string();
        s.ack(&id, 2).await.unwrap();
        s.close().await;

        let s = open(dir.path()).await;
        assert_eq!(s.spool_id(), id);
        let c = s.append(rec(b"c")).await.unwrap();
        assert!(matches!(c, Appended::New { seq: 3, .. }), "{c:?}");
        let got = s.read_after(0, 10, 1 << 20).await.unwrap();
        assert_eq!(got, vec![(3, b"c".to_vec())]);
    }

    #[tokio::test]
    async fn duplicates_get_the_original_time_even_after_ack() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        let r = rec(b"x");
        let first = s.append(r.clone()).await.unwrap();
        let Appended::New { accepted_ms, .. } = first else {
            panic!("{first:?}")
        };
        let mut again = r.clone();
        again.accepted_ms += 5000;
        assert_eq!(
            s.append(again.clone()).await.unwrap(),
            Appended::Duplicate { accepted_ms }
        );
        let id = s.spool_id().to_string();
        s.ack(&id, 1).await.unwrap();
        assert_eq!(
            s.append(again).await.unwrap(),
            Appended::Duplicate { accepted_ms }
        );
        assert_eq!(s.stats().pending_records.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn concurrent_appends_are_group_committed_and_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        let mut tasks = Vec::new();
        for i in 0..500u32 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.append(rec(&i.to_be_bytes())).await.unwrap()
            }));
        }
        let mut seqs = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Appended::New { seq, .. } => seqs.push(seq),
                d => panic!("{d:?}"),
            }
        }
        seqs.sort();
        assert_eq!(seqs, (1..=500).collect::<Vec<_>>());
        assert!(s.stats().batches.load(Ordering::Relaxed) < 500);
        assert_eq!(s.read_after(0, 1000, 1 << 20).await.unwrap().len(), 500);
    }

    #[tokio::test]
    async fn bound_refuses_new_records_but_still_answers_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = SpoolConfig::new(dir.path().join("spool.db"));
        cfg.max_records = 2;
        let s = Spool::open(cfg).await.unwrap();
        let r1 = rec(b"1");
        s.append(r1.clone()).await.unwrap();
        s.append(rec(b"2")).await.unwrap();
        assert!(matches!(s.append(rec(b"3")).await, Err(SpoolError::Full)));
        assert!(matches!(s.append(r1).await, Ok(Appended::Duplicate { .. })));
        let id = s.spool_id().to_string();
        s.ack(&id, 2).await.unwrap();
        assert!(matches!(
            s.append(rec(b"3")).await,
            Ok(Appended::New { seq: 3, .. })
        ));
    }

    #[tokio::test]
    async fn ack_for_another_spool_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        s.append(rec(b"1")).await.unwrap();
        assert!(matches!(
            s.ack("someone-else", 1).await,
            Err(SpoolError::WrongSpool { .. })
        ));
        assert_eq!(s.read_after(0, 10, 1 << 20).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_spool_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("spool.db");
        std::fs::write(&p, vec![0x55u8; 8192]).unwrap();
        let e = Spool::open(SpoolConfig::new(&p))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("spool.db") && e.contains("not a readable spool"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn spool_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        s.append(rec(b"1")).await.unwrap();
        for f in ["spool.db", "spool.db-wal"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }

    #[test]
    fn forward_batch_encoding_round_trips() {
        let rec = ForwardRecord {
            seq: 0,
            message_id: MessageId::new().to_string(),
            received_unix_ms: 42,
            record: None,
        };
        let payload = rec.encode_to_vec();
        let header = ForwardBatch {
            relay_id: "r1".into(),
            spool_id: "s".into(),
            records: vec![],
            last_seq: 9,
            pending_records: 2,
            pending_bytes: 100,
        };
        let body = encode_forward_batch(&header, &[(7, payload.clone()), (300, payload)]);
        let batch = ForwardBatch::decode(body.as_slice()).unwrap();
        assert_eq!(batch.relay_id, "r1");
        assert_eq!(batch.last_seq, 9);
        assert_eq!(batch.records.len(), 2);
        assert_eq!(batch.records[0].seq, 7);
        assert_eq!(batch.records[1].seq, 300);
        assert_eq!(batch.records[1].message_id, rec.message_id);
    }
}
