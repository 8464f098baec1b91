//! Named administrators: a name, a role, and the SHA-256 of a token (the token itself is shown
//! once when made and never stored). Every change here writes its audit entry in the same
//! transaction ([`super::audit`]).
//!
//! A site that ran with the single token of `certs init` has no administrator yet: the admin
//! API makes that token the first administrator, `admin` with role `full`
//! ([`Store::bootstrap_admin`]), so such a site keeps working after an upgrade.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::json;

use super::audit::{Actor, Change};
use super::rows::Cols;
use super::{Store, StoreError};
use crate::clock;

/// What an administrator may do; each role may do everything the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reports, console pages, metrics, the audit log.
    Read,
    /// Also baselines, collections, deployments, device tags and blocks.
    Compliance,
    /// Also retention settings and runs, terms, the privacy URL, administrators.
    Full,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Compliance => "compliance",
            Role::Full => "full",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Role::Read),
            "compliance" => Ok(Role::Compliance),
            "full" => Ok(Role::Full),
            other => Err(format!(
                "unknown role {other:?}: use read, compliance or full"
            )),
        }
    }
}

/// An administrator as listed (never the token or its hash).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Administrator {
    pub name: String,
    pub role: Role,
    pub created_ms: i64,
    pub rotated_ms: i64,
    pub disabled_ms: Option<i64>,
}

/// An administrator with its token's hash, for the admin API's check.
#[derive(Debug, Clone)]
pub struct AdminCredential {
    pub admin: Administrator,
    pub token_sha256: Vec<u8>,
}

/// The name the bootstrap token's administrator gets.
pub const BOOTSTRAP_ADMIN: &str = "admin";

const COLS: &str = "name, role, created_ms, rotated_ms, disabled_ms, token_sha256";

impl Store {
    /// Every administrator, by name.
    pub async fn administrators(&self) -> Result<Vec<Administrator>, StoreError> {
        Ok(self
            .admin_credentials()
            .await?
            .into_iter()
            .map(|c| c.admin)
            .collect())
    }

    /// Every administrator with its token hash (the admin API compares against each one).
    pub async fn admin_credentials(&self) -> Result<Vec<AdminCredential>, StoreError> {
        read!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLS} FROM administrators ORDER BY name"
            )))
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    let role: String = r.col(1)?;
                    Ok(AdminCredential {
                        admin: Administrator {
                            name: r.col(0)?,
                            role: role.parse().map_err(StoreError::Corrupt)?,
                            created_ms: r.col(2)?,
                            rotated_ms: r.col(3)?,
                            disabled_ms: r.col(4)?,
                        },
                        token_sha256: r.col(5)?,
                    })
                })
                .collect()
        })
    }

    /// Adds an administrator; `false` when the name is taken (nothing changes).
    pub async fn add_admin(
        &self,
        actor: &Actor,
        name: &str,
        role: Role,
        token_sha256: &[u8; 32],
    ) -> Result<bool, StoreError> {
        dispatch_sql!(self, s, sql => {
            let mut tx = s.begin_write().await?;
            let added = sql::add_admin(&mut tx, actor, name, role, token_sha256, false).await?;
            tx.commit().await?;
            Ok(added)
        })
    }

    /// Makes the site's bootstrap token (`admin.token`) the administrator `admin` with role
    /// `full`, if the site has no administrator at all; `true` when it did.
    pub async fn bootstrap_admin(&self, token_sha256: &[u8; 32]) -> Result<bool, StoreError> {
        dispatch_sql!(self, s, sql => {
            let mut tx = s.begin_write().await?;
            let added = sql::add_admin(
                &mut tx, &Actor::site(), BOOTSTRAP_ADMIN, Role::Full, token_sha256, true,
            )
            .await?;
            tx.commit().await?;
            Ok(added)
        })
    }

    /// Disables an administrator: its token is refused from now on. `None` for an unknown
    /// name, `Some(false)` when it was disabled already.
    pub async fn disable_admin(
        &self,
        actor: &Actor,
        name: &str,
    ) -> Result<Option<bool>, StoreError> {
        dispatch_sql!(self, s, sql => {
            let mut tx = s.begin_write().await?;
            let out = sql::disable_admin(&mut tx, actor, name).await?;
            tx.commit().await?;
            Ok(out)
        })
    }

    /// Gives an administrator a new token (the old one is refused from now on); `false` for an
    /// unknown name.
    pub async fn rotate_admin(
        &self,
        actor: &Actor,
        name: &str,
        token_sha256: &[u8; 32],
    ) -> Result<bool, StoreError> {
        dispatch_sql!(self, s, sql => {
            let mut tx = s.begin_write().await?;
            let out = sql::rotate_admin(&mut tx, actor, name, token_sha256).await?;
            tx.commit().await?;
            Ok(out)
        })
    }
}

fn view(name: &str, role: Role, disabled_ms: Option<i64>) -> serde_json::Value {
    json!({ "name": name, "role": role.as_str(), "disabled_ms": disabled_ms })
}

for_each_backend! {
    pub(crate) async fn add_admin(
        tx: &mut Conn,
        actor: &Actor,
        name: &str,
        role: Role,
        token_sha256: &[u8; 32],
        only_if_none: bool,
    ) -> Result<bool, StoreError> {
        if only_if_none {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM administrators")
                .fetch_one(&mut *tx)
                .await?;
            if n > 0 {
                return Ok(false);
            }
        }
        let now = clock::now_ms();
        let added = sqlx::query(
            "INSERT INTO administrators (name, role, token_sha256, created_ms, rotated_ms) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(&token_sha256[..])
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if added {
            audit::record(&mut *tx, actor, Change {
                action: "add",
                object: "administrator",
                object_id: name,
                before: None,
                after: Some(view(name, role, None)),
            })
            .await?;
        }
        Ok(added)
    }

    pub(crate) async fn disable_admin(
        tx: &mut Conn,
        actor: &Actor,
        name: &str,
    ) -> Result<Option<bool>, StoreError> {
        let Some((role, disabled)) = admin_in(&mut *tx, name).await? else {
            return Ok(None);
        };
        if disabled.is_some() {
            return Ok(Some(false));
        }
        let now = clock::now_ms();
        sqlx::query("UPDATE administrators SET disabled_ms = $1 WHERE name = $2")
            .bind(now)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        audit::record(&mut *tx, actor, Change {
            action: "disable",
            object: "administrator",
            object_id: name,
            before: Some(view(name, role, None)),
            after: Some(view(name, role, Some(now))),
        })
        .await?;
        Ok(Some(true))
    }

    pub(crate) async fn rotate_admin(
        tx: &mut Conn,
        actor: &Actor,
        name: &str,
        token_sha256: &[u8; 32],
    ) -> Result<bool, StoreError> {
        let Some((role, disabled)) = admin_in(&mut *tx, name).await? else {
            return Ok(false);
        };
        let now = clock::now_ms();
        sqlx::query("UPDATE administrators SET token_sha256 = $1, rotated_ms = $2 WHERE name = $3")
            .bind(&token_sha256[..])
            .bind(now)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let v = view(name, role, disabled);
        audit::record(&mut *tx, actor, Change {
            action: "rotate",
            object: "administrator",
            object_id: name,
            before: Some(v.clone()),
            after: Some(v),
        })
        .await?;
        Ok(true)
    }

    async fn admin_in(
        tx: &mut Conn,
        name: &str,
    ) -> Result<Option<(Role, Option<i64>)>, StoreError> {
        let row: Option<(String, Option<i64>)> =
            sqlx::query_as("SELECT role, disabled_ms FROM administrators WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        row.map(|(r, d)| Ok((r.parse().map_err(StoreError::Corrupt)?, d)))
            .transpose()
    }
}
