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

use limiter_overload::OverloadConfig;

use crate::daemon::settings::DaemonSettings;
use crate::rules::adaptive::SystemRule;
use crate::rules::dest::Dest;
use crate::rules::spec::RuleSpec;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    daemon: DaemonSettings,
    #[serde(default)]
    overload: Option<Spanned<OverloadConfig>>,
    #[serde(default)]
    system: Option<Spanned<SystemRule>>,
    #[serde(default)]
    rules: Vec<Spanned<RuleSpec>>,
}

/// A file for `limiter apply -f`: `[[rules]]` only.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    #[serde(default)]
    daemon: Option<Spanned<toml::Value>>,
    #[serde(default)]
    rules: Vec<Spanned<RuleSpec>>,
}

/// A parsed and validated config.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    pub daemon: DaemonSettings,
    /// `[overload]`: sampling, filter and check defaults, node-wide priority shares (read at
    /// start; a change applies at restart).
    pub overload: OverloadConfig,
    /// `[system]`: the node-wide system rule (reloadable).
    pub system: Option<SystemRule>,
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
        let error = Locator { path, text };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| error.at(e.span(), e.message().trim().to_string()))?;

        if let Some(level) = &raw.daemon.log_level
            && let Err(e) = tracing_subscriber::EnvFilter::try_new(level)
        {
            let place =
                daemon_header_end(text).and_then(|end| field_in_table(text, end, "log_level"));
            return Err(error.at(
                place,
                format!(
                    "log_level {level:?} is not a level or filter (e.g. \"info\", \"limiter=debug\"): {e}"
                ),
            ));
        }
        let overload = match raw.overload {
            Some(o) => {
                let span = o.span();
                let o = o.into_inner();
                o.validate()
                    .map_err(|e| error.at(Some(span), format!("[overload] {e}")))?;
                o
            }
            None => OverloadConfig::default(),
        };
        let system = match raw.system {
            Some(s) => {
                let span = s.span();
                let rule = s.into_inner();
                rule.validate()
                    .map_err(|e| error.at(Some(span), format!("[system] {e}")))?;
                Some(rule)
            }
            None => None,
        };
        Ok(Config {
            daemon: raw.daemon,
            overload,
            system,
            rules: checked_rules(&error, raw.rules)?,
        })
    }
}

/// Parses and validates a rules file for `limiter apply -f`: `[[rules]]` tables as in the
/// config, and nothing else. `path` only names the file in errors.
pub fn parse_rules(path: &Path, text: &str) -> Result<Vec<RuleSpec>, ConfigError> {
    let error = Locator { path, text };
    let raw: RawRules =
        toml::from_str(text).map_err(|e| error.at(e.span(), e.message().trim().to_string()))?;
    if let Some(daemon) = raw.daemon {
        return Err(error.at(
            Some(daemon.span()),
            "`limiter apply` takes [[rules]] tables only; [daemon] settings are read from the \
             daemon's --config at start (`limiter reload` re-reads that file's rules)"
                .into(),
        ));
    }
    checked_rules(&error, raw.rules)
}

/// Makes errors that name the file, and the line and column of a byte span.
struct Locator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn at(&self, span: Option<Range<usize>>, message: String) -> ConfigError {
        let path = self.path.to_owned();
        match span {
            Some(span) => {
                let (line, column) = line_column(self.text, span.start);
                ConfigError::Invalid {
                    path,
                    line,
                    column,
                    message,
                }
            }
            None => ConfigError::InvalidNoPlace { path, message },
        }
    }
}

/// Each rule valid, no destination twice; in file order.
fn checked_rules(
    error: &Locator<'_>,
    rules: Vec<Spanned<RuleSpec>>,
) -> Result<Vec<RuleSpec>, ConfigError> {
    let mut seen: BTreeMap<&Dest, Range<usize>> = BTreeMap::new();
    for rule in &rules {
        let span = rule.span();
        let spec = rule.get_ref();
        crate::rules::validate::validate(spec).map_err(|e| {
            let field = e.field();
            let place = field_in_table(error.text, span.end, field).unwrap_or(span.clone());
            let rule = &spec.destination;
            error.at(
                Some(place),
                format!("rule for {rule}, field `{field}`: {e}"),
            )
        })?;
        if let Some(first) = seen.insert(&spec.destination, span.clone()) {
            let (first_line, _) = line_column(error.text, first.start);
            let message = format!(
                "a second rule for {} (the first is at line {first_line}); \
                 keep one rule per destination",
                spec.destination
            );
            return Err(error.at(Some(span), message));
        }
    }
    Ok(rules.into_iter().map(Spanned::into_inner).collect())
}

/// Where the `[daemon]` header line ends.
fn daemon_header_end(text: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        offset += line.len();
        if line.trim() == "[daemon]" {
            return Some(offset);
        }
    }
    None
}

/// Where `field = ...` is set in the table whose header ends at `from` (up to the next header).
fn field_in_table(text: &str, from: usize, field: &str) -> Option<Range<usize>> {
    let mut offset = from;
    for line in text.get(from..)?.split_inclusive('\n') {
        let body = line.trim_start();
        if body.starts_with('[') {
            return None;
        }
        if let Some(rest) = body.strip_prefix(field)
            && rest.trim_start().starts_with('=')
        {
            let start = offset + (line.len() - body.len());
            return Some(start..start + field.len());
        }
        offset += line.len();
    }
    None
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
