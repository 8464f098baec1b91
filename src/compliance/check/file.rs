//! The parameters of the file evaluators: `file_exists`, `file_mode` and `file_owner` take a
//! [`Target`], `file_contains` a [`Contains`].

use regex::Regex;

use super::{DefinitionError, Params};

/// A file named by an absolute path of the device.
#[derive(Debug, Clone)]
pub struct Target {
    pub path: String,
}

impl Target {
    pub(crate) fn parse(p: &mut Params<'_>) -> Result<Self, DefinitionError> {
        Ok(Self {
            path: p.path("path")?,
        })
    }
}

/// A file and a regular expression one of its lines must (or must not) match.
#[derive(Debug, Clone)]
pub struct Contains {
    pub path: String,
    pub pattern: Regex,
}

impl Contains {
    pub(crate) fn parse(p: &mut Params<'_>) -> Result<Self, DefinitionError> {
        let path = p.path("path")?;
        let src = p.required("pattern")?;
        let pattern = regex::RegexBuilder::new(src)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| {
                p.bad(
                    "pattern",
                    format!(
                        "{src:?} is not a valid regular expression: {}",
                        e.to_string().lines().last().unwrap_or("").trim()
                    ),
                )
            })?;
        Ok(Self { path, pattern })
    }
}
