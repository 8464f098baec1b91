//! The schema migrations of both backends (`migrations/sqlite/`, `migrations/postgres/`,
//! embedded by build.rs) and the check a read-only opener makes that a database holds exactly
//! this binary's schema.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::StoreError;

/// The migrations of both backends, embedded by build.rs.
pub(crate) mod embedded {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

/// The schema migrations of a backend, as sqlx wants them.
pub(crate) fn migrator(list: &'static [(i64, &'static str, &'static str)]) -> Migrator {
    Migrator {
        migrations: Cow::Owned(
            list.iter()
                .map(|(v, name, sql)| {
                    Migration::new(
                        *v,
                        Cow::Borrowed(*name),
                        MigrationType::Simple,
                        sqlx::AssertSqlSafe(*sql).into_sql_str(),
                        false,
                    )
                })
                .collect(),
        ),
        ..Migrator::DEFAULT
    }
}

/// Checks that the migrations a database recorded are exactly `expected` (this binary's):
/// `recorded` is `None` when the database has no migration table at all, else the highest
/// version applied and how many migrations failed half-way.
pub(crate) fn check_schema(
    url: &str,
    recorded: Option<(i64, i64)>,
    expected: &[(i64, &str, &str)],
) -> Result<(), StoreError> {
    let want = expected.last().map_or(0, |m| m.0);
    let fail = |reason: String| {
        Err(StoreError::Schema {
            url: url.to_string(),
            reason,
        })
    };
    match recorded {
        None | Some((0, _)) => fail(
            "holds no mprelay site database (is the name right? the site server creates it)".into(),
        ),
        Some((_, failed)) if failed > 0 => fail(format!(
            "has {failed} schema migration(s) that failed half-way; start the site server to see why"
        )),
        Some((have, _)) if have < want => fail(format!(
            "has schema version {have}, this mprelay reads version {want}: start this version's \
             site server once to upgrade it"
        )),
        Some((have, _)) if have > want => fail(format!(
            "has schema version {have}, newer than this mprelay's ({want}): use the mprelay the \
             site server runs"
        )),
        Some(_) => Ok(()),
    }
}

/// The query giving [`check_schema`]'s `recorded`, on both backends, once the migration table
/// is known to exist.
pub(crate) const RECORDED_SCHEMA: &str = "SELECT COALESCE(MAX(version), 0), \
     COALESCE(SUM(CASE WHEN success THEN 0 ELSE 1 END), 0) FROM _sqlx_migrations";
