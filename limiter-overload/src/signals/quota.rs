//! The CPU quota of one cgroup, in CPUs, from v2 `cpu.max` or v1 `cpu.cfs_quota_us` and
//! `cpu.cfs_period_us`. A group without a quota (or without the files) has none: it is then
//! measured against the node's CPUs.

use std::path::{Path, PathBuf};

use super::read::{SignalError, parse_f64, parse_i64, parse_u64, read_optional, read_required};

/// The quota files of one group.
#[derive(Clone, Debug)]
pub(super) enum Limit {
    /// v2 `cpu.max`: `max 100000` or `QUOTA PERIOD` in µs.
    V2(PathBuf),
    /// v1 `cpu.cfs_quota_us` (-1 = none) and `cpu.cfs_period_us`.
    V1 { quota: PathBuf, period: PathBuf },
}

pub(super) fn v1_limit(dir: PathBuf) -> Limit {
    Limit::V1 {
        quota: dir.join("cpu.cfs_quota_us"),
        period: dir.join("cpu.cfs_period_us"),
    }
}

/// The quota of one group in CPUs; `None` when it has none or the file is absent (the v2 root
/// has no `cpu.max`; a v1 node may not mount the cpu controller).
pub(super) fn read_limit(limit: &Limit) -> Result<Option<f64>, SignalError> {
    match limit {
        Limit::V2(path) => {
            let Some(text) = read_optional(path)? else {
                return Ok(None);
            };
            let mut fields = text.split_whitespace();
            let (quota, period) = (fields.next(), fields.next());
            match (quota, period, fields.next()) {
                (Some("max"), _, None) => Ok(None),
                (Some(q), Some(p), None) => cpus(
                    path,
                    parse_f64(path, "quota", q)?,
                    parse_f64(path, "period", p)?,
                ),
                _ => Err(SignalError::Format {
                    path: path.clone(),
                    what: format!(
                        "expected `max PERIOD` or `QUOTA PERIOD`, found {:?}",
                        text.trim()
                    ),
                }),
            }
        }
        Limit::V1 { quota, period } => {
            let Some(text) = read_optional(quota)? else {
                return Ok(None);
            };
            let q = parse_i64(quota, "cpu.cfs_quota_us", text.trim())?;
            if q < 0 {
                return Ok(None);
            }
            let p = read_required(period)?;
            cpus(
                period,
                q as f64,
                parse_u64(period, "cpu.cfs_period_us", p.trim())? as f64,
            )
        }
    }
}

fn cpus(path: &Path, quota: f64, period: f64) -> Result<Option<f64>, SignalError> {
    if quota > 0.0 && period > 0.0 {
        Ok(Some(quota / period))
    } else {
        Err(SignalError::Format {
            path: path.to_owned(),
            what: format!("quota {quota} and period {period} must both be positive"),
        })
    }
}
