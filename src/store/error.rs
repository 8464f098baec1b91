//! What can go wrong with the site database, and how a database error reads to an operator.

use thiserror::Error;

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database URL is not `sqlite://…` or `postgres://…`.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    BadUrl(String),
    /// A value a batch asked to store does not fit the database (e.g. an out-of-range number).
    #[error("cannot store {0}")]
    Unstorable(String),
    /// Connecting or opening the database failed.
    #[error("cannot open database {url}: {}", describe(cause))]
    Open { url: String, cause: sqlx::Error },
    /// Applying the schema failed.
    #[error("database migration failed: {}", describe_migration(.0))]
    Migrate(sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database error: {}", describe(.0))]
    Db(sqlx::Error),
    /// The database is not a site database this binary can read as it is: no mprelay schema
    /// (a mistyped name?), or one older or newer than this binary's.
    #[error("{url} {reason}")]
    Schema { url: String, reason: String },
    /// The change names something the site does not hold, or breaks a rule of the data (an
    /// unknown baseline or collection); nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// Stored data violates an invariant (e.g. an unknown state name).
    #[error("corrupt data in the site database: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Db(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(e)
    }
}

/// A database error as an operator should read it: PostgreSQL's message with its detail and
/// hint, without the line of the server's own C source that sqlx appends ("… at line 948",
/// easily taken for a line of one's configuration). The whole text is here, so [`StoreError`]
/// names no further source.
pub(crate) fn describe(e: &sqlx::Error) -> String {
    let sqlx::Error::Database(d) = e else {
        return e.to_string();
    };
    let Some(pg) = d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() else {
        return d.to_string();
    };
    let mut out = pg.message().to_string();
    for extra in [pg.detail(), pg.hint()].into_iter().flatten() {
        out.push_str(" (");
        out.push_str(extra);
        out.push(')');
    }
    out
}

fn describe_migration(e: &sqlx::migrate::MigrateError) -> String {
    use sqlx::migrate::MigrateError;
    match e {
        MigrateError::Execute(e) => describe(e),
        MigrateError::ExecuteMigration(e, version) => {
            format!("migration {version}: {}", describe(e))
        }
        other => other.to_string(),
    }
}
