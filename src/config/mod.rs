//! Configuration files (TOML) for the relay, the site server and the agent, with environment
//! overrides: `MPRELAY_<ROLE>__<SECTION>__<KEY>=value` (e.g. `MPRELAY_RELAY__SPOOL__PATH=/x`,
//! `MPRELAY_SITE__DATABASE=postgres://…`). Unknown keys are errors, relative paths are relative
//! to the configuration file, and every error names the file, line or variable at fault.

mod files;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use thiserror::Error;

pub use files::*;

/// Why a configuration could not be used. Each message is one sentence naming what is wrong.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the expected settings.
    #[error("configuration {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// An environment override could not be applied.
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    /// A setting has a value that cannot work.
    #[error("configuration {origin}: {field}: {message}")]
    Invalid {
        origin: String,
        field: String,
        message: String,
    },
    /// A file the configuration names could not be loaded.
    #[error("{0}")]
    Pki(#[from] crate::pki::PkiError),
}

/// A loaded configuration and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub value: T,
    /// Relative paths in the configuration are relative to this directory.
    pub base: PathBuf,
    /// The file name, or "environment" when there was no file.
    pub origin: String,
}

impl<T> Loaded<T> {
    /// `p` resolved against the configuration's directory.
    pub fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    pub fn invalid(&self, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.clone(),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Loads `path` (if any) as `T`, then applies `MPRELAY_<ROLE>__…` overrides from `env`.
pub fn load<T: DeserializeOwned>(
    path: Option<&Path>,
    role: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Loaded<T>, ConfigError> {
    let (text, base, origin) = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.into(),
                source,
            })?;
            let base = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            (text, base, p.display().to_string())
        }
        None => (String::new(), PathBuf::from("."), "environment".to_string()),
    };
    let parse_err = |message: String| ConfigError::Parse {
        path: PathBuf::from(&origin),
        message,
    };
    // First against the file alone, so errors point at its lines.
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| parse_err(one_line(&e.to_string())))?;
    let prefix = format!("MPRELAY_{}__", role.to_uppercase());
    let mut overridden = false;
    for (var, value) in env {
        let Some(rest) = var.strip_prefix(&prefix) else {
            continue;
        };
        let keys: Vec<String> = rest.split("__").map(|k| k.to_lowercase()).collect();
        if keys.iter().any(String::is_empty) {
            return Err(ConfigError::Env {
                var,
                message: "empty key between separators".into(),
            });
        }
        set_path(&mut table, &keys, parse_env_value(&value)).map_err(|message| {
            ConfigError::Env {
                var: var.clone(),
                message,
            }
        })?;
        overridden = true;
    }
    let value: T = if overridden {
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| {
                parse_err(format!(
                    "after environment overrides: {}",
                    one_line(&e.to_string())
                ))
            })?
    } else {
        toml::from_str(&text).map_err(|e| parse_err(one_line(&e.to_string())))?
    };
    Ok(Loaded {
        value,
        base,
        origin,
    })
}

/// toml's messages span several lines with a source excerpt; keep the first line and the
/// message proper so the error stays one sentence on the terminal.
fn one_line(msg: &str) -> String {
    let lines: Vec<&str> = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match lines.as_slice() {
        [] => String::new(),
        [only] => (*only).to_string(),
        [first, .., last] => format!("{first}: {last}"),
    }
}

/// An override's value: TOML if the whole of it is one TOML value (numbers, booleans, arrays),
/// else a plain string — so a value with a newline in it is never cut to its first line.
fn parse_env_value(v: &str) -> toml::Value {
    let doc = format!("v = {v}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) if t.len() == 1 => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(v.into())),
        _ => toml::Value::String(v.into()),
    }
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = keys.split_last().ok_or("no key")?;
    let mut t = table;
    for k in parents {
        let entry = t
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry
            .as_table_mut()
            .ok_or_else(|| format!("{k} is not a section"))?;
    }
    t.insert(last.clone(), value);
    Ok(())
}

/// The `MPRELAY_…` variables of this process.
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("MPRELAY_"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct T {
        name: String,
        #[serde(default)]
        spool: S,
    }
    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct S {
        #[serde(default)]
        max_bytes: u64,
        #[serde(default)]
        path: String,
    }

    #[test]
    fn env_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.toml");
        std::fs::write(&p, "name = \"a\"\n[spool]\npath = \"s.db\"\n").unwrap();
        let env = vec![
            (
                "MPRELAY_RELAY__SPOOL__MAX_BYTES".to_string(),
                "42".to_string(),
            ),
            ("MPRELAY_RELAY__NAME".to_string(), "b".to_string()),
            ("MPRELAY_SITE__NAME".to_string(), "ignored".to_string()),
        ];
        let l: Loaded<T> = load(Some(&p), "relay", env).unwrap();
        assert_eq!(l.value.name, "b");
        assert_eq!(l.value.spool.max_bytes, 42);
        assert_eq!(l.value.spool.path, "s.db");
        assert_eq!(l.path(Path::new("s.db")), dir.path().join("s.db"));
    }

    #[test]
    fn an_override_is_one_value_or_a_string() {
        assert_eq!(parse_env_value("42"), toml::Value::Integer(42));
        assert_eq!(parse_env_value("true"), toml::Value::Boolean(true));
        assert_eq!(
            parse_env_value("1\nspool = 2"),
            toml::Value::String("1\nspool = 2".into())
        );
        assert_eq!(
            parse_env_value("/var/lib/mprelay"),
            toml::Value::String("/var/lib/mprelay".into())
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, "name = \"a\"\n[spool]\nmax_bytez = 3\n").unwrap();
        let e = load::<T>(Some(&p), "relay", vec![])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad.toml") && e.contains("line 3") && e.contains("max_bytez"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");

        std::fs::write(&p, "name = \n").unwrap();
        let e = load::<T>(Some(&p), "relay", vec![])
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.toml") && e.contains("line 1"), "{e}");

        std::fs::write(&p, "name = \"a\"\n").unwrap();
        let env = vec![(
            "MPRELAY_RELAY__SPOOL__MAX_BYTES".to_string(),
            "lots".to_string(),
        )];
        let e = load::<T>(Some(&p), "relay", env).unwrap_err().to_string();
        assert!(e.contains("max_bytes") || e.contains("invalid type"), "{e}");
    }
}
