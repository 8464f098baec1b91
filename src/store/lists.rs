//! Read queries written once for both backends: each SQL text is a `const` with `$N`
//! placeholders, which sqlx's SQLite driver accepts as well as PostgreSQL's, and runs on either
//! pool through [`on_reader!`]. Values are selected as `BIGINT`/`TEXT` so both drivers decode
//! them into the same Rust types.

use super::{Store, StoreError};

/// Runs `$body` with `$pool` bound to the backend's pool for reads (SQLite's reader pool, the
/// PostgreSQL pool), so one query text serves both.
macro_rules! on_reader {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store {
            Store::Sqlite(s) => {
                let $pool = &s.reader;
                $body
            }
            Store::Postgres(s) => {
                let $pool = s.pool();
                $body
            }
        }
    };
}

/// The highest terms version each user accepted, on any device.
const USER_TERMS_VERSIONS: &str = "SELECT user_name, CAST(MAX(terms_version) AS BIGINT) \
     FROM terms_acceptances GROUP BY user_name ORDER BY user_name";

/// Moves whenever an acceptance is stored (acceptances are never deleted).
const ACCEPTANCES_MARK: &str = "SELECT CAST(COUNT(*) AS BIGINT) FROM terms_acceptances";

impl Store {
    /// Per user, the highest version of the terms accepted on any device: what gates the user's
    /// portal functions everywhere.
    pub async fn user_terms_versions(&self) -> Result<Vec<(String, u32)>, StoreError> {
        let rows: Vec<(String, i64)> = on_reader!(self, |pool| {
            sqlx::query_as(USER_TERMS_VERSIONS).fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            .map(|(u, v)| (u, u32::try_from(v).unwrap_or(0)))
            .collect())
    }

    /// A number that changes whenever a terms acceptance is stored, so the policy builder
    /// notices new acceptances without reading them all.
    pub async fn acceptances_mark(&self) -> Result<i64, StoreError> {
        Ok(on_reader!(self, |pool| {
            sqlx::query_scalar(ACCEPTANCES_MARK).fetch_one(pool).await?
        }))
    }
}
