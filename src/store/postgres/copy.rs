//! `COPY … FROM STDIN (FORMAT binary)`: the fastest way to put many rows into PostgreSQL. Rows
//! are encoded here, in the binary COPY format (a header, then per row a field count and per
//! field a length and the value in the type's binary send format), and streamed in chunks so the
//! server starts inserting while the rest is still being encoded.
//!
//! The encoder knows nothing of tables: each caller writes its columns in the order its `COPY`
//! statement names them, with the exact binary width of each column type (`BIGINT` 8 bytes,
//! `INTEGER` 4, `BOOLEAN` 1, `TEXT` and `BYTEA` their bytes). A width that does not match the
//! column makes the server refuse the whole COPY, so the tests catch it on the first row.

use sqlx::PgConnection;
use sqlx::postgres::PgCopyIn;

/// Bytes encoded before they are handed to the connection.
const CHUNK: usize = 1 << 20;

/// A `COPY FROM STDIN (FORMAT binary)` in progress.
pub(crate) struct CopyWriter<'c> {
    copy: PgCopyIn<&'c mut PgConnection>,
    buf: Vec<u8>,
    rows: u64,
}

impl<'c> CopyWriter<'c> {
    /// Starts `statement`, which must be `COPY table (columns) FROM STDIN (FORMAT binary)`.
    pub async fn begin(conn: &'c mut PgConnection, statement: &str) -> Result<Self, sqlx::Error> {
        let copy = conn.copy_in_raw(statement).await?;
        let mut buf = Vec::with_capacity(CHUNK + 64 * 1024);
        // Signature, flags (no OIDs), header extension length.
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes());
        buf.extend_from_slice(&0i32.to_be_bytes());
        Ok(Self { copy, buf, rows: 0 })
    }

    /// Starts a row of `fields` columns; the caller then writes exactly that many fields.
    /// Sends what is buffered first if the buffer is full, so memory stays bounded.
    pub async fn row(&mut self, fields: i16) -> Result<&mut Self, sqlx::Error> {
        if self.buf.len() >= CHUNK {
            self.copy.send(std::mem::take(&mut self.buf)).await?;
            self.buf.reserve(CHUNK + 64 * 1024);
        }
        self.buf.extend_from_slice(&fields.to_be_bytes());
        self.rows += 1;
        Ok(self)
    }

    /// A `BIGINT`.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// An `INTEGER`.
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&4i32.to_be_bytes());
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A `BOOLEAN`.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.buf.extend_from_slice(&1i32.to_be_bytes());
        self.buf.push(u8::from(v));
        self
    }

    /// A `TEXT` (UTF-8; the server refuses NUL characters, which intake validation rejects).
    pub fn text(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }

    /// A nullable `TEXT`.
    pub fn opt_text(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            Some(v) => self.text(v),
            None => {
                self.buf.extend_from_slice(&(-1i32).to_be_bytes());
                self
            }
        }
    }

    /// A `BYTEA`.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        // Values are bounded far below 2 GiB by the intake limits (1 MiB bodies); saturating
        // keeps a bug from wrapping into a negative (NULL) length.
        let len = i32::try_from(v.len()).unwrap_or(i32::MAX);
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(v);
        self
    }

    /// Sends the rest and the trailer; returns the rows the server stored.
    pub async fn finish(mut self) -> Result<u64, sqlx::Error> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.copy.send(std::mem::take(&mut self.buf)).await?;
        let stored = self.copy.finish().await?;
        debug_assert_eq!(stored, self.rows);
        Ok(stored)
    }
}
