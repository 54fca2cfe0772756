//! The daemon's TOML config file (deploy/config/limiter.toml documents every field).
//!
//! The whole file is parsed and every rule validated before the daemon touches the kernel, so
//! a typo stops the start with a message that names the file, line and field, and changes
//! nothing. Unknown fields are errors: a misspelt limit that was silently ignored would leave a
//! service unprotected.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::dest::Dest;
use crate::model::RuleSpec;

/// `[daemon]`: settings that the command line overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSection {
    pub socket: Option<PathBuf>,
    pub cgroup: Option<PathBuf>,
    pub bpffs: Option<PathBuf>,
    pub log_level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    daemon: DaemonSection,
    #[serde(default)]
    rules: Vec<Spanned<RuleSpec>>,
}

/// A parsed and validated config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub daemon: DaemonSection,
    /// Rules in file order, each valid, no destination twice.
    pub rules: Vec<RuleSpec>,
}

/// Why a config cannot be used. Each message starts with `FILE:LINE:COLUMN:` where a place is
/// known, as compilers do, so editors can jump to it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    InvalidNoPlace { path: PathBuf, message: String },
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates `text`; `path` only names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let error = |span: Option<Range<usize>>, message: String| match span {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                ConfigError::Invalid {
                    path: path.to_owned(),
                    line,
                    column,
                    message,
                }
            }
            None => ConfigError::InvalidNoPlace {
                path: path.to_owned(),
                message,
            },
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| error(e.span(), e.message().trim().to_string()))?;

        if let Some(level) = &raw.daemon.log_level
            && let Err(e) = tracing_subscriber::EnvFilter::try_new(level)
        {
            return Err(error(
                None,
                format!(
                    "log_level {level:?} is not a level or filter (e.g. \"info\", \"limiter=debug\"): {e}"
                ),
            ));
        }

        let mut seen: BTreeMap<&Dest, Range<usize>> = BTreeMap::new();
        for rule in &raw.rules {
            let span = rule.span();
            let spec = rule.get_ref();
            crate::validate::validate(spec).map_err(|e| {
                error(
                    Some(span.clone()),
                    format!("rule for {}: {e}", spec.destination),
                )
            })?;
            if let Some(first) = seen.insert(&spec.destination, span.clone()) {
                let (first_line, _) = line_column(text, first.start);
                let message = format!(
                    "a second rule for {} (the first is at line {first_line}); \
                     keep one rule per destination",
                    spec.destination
                );
                return Err(error(Some(span), message));
            }
        }
        Ok(Config {
            daemon: raw.daemon,
            rules: raw.rules.into_iter().map(Spanned::into_inner).collect(),
        })
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
