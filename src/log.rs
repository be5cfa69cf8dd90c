//! Logs: one line per event on stderr with a timestamp (UTC, RFC 3339)
//! and a level, as text or as JSON objects (`[log] format`), filtered by
//! `[log] level` or the `VSWITCHD_LOG` environment variable (tracing's
//! `EnvFilter` syntax: `info`, `vswitchd=debug,dpdk=warn`).
//!
//! DPDK's own log goes through the same subscriber with target `dpdk`
//! (see `crate::dpdk::log`): its errors and warnings as such, its
//! notices as info, and its info lines (EAL's start-up chatter: lcores,
//! NUMA nodes, IOVA mode) as debug, so a normal start logs only what an
//! operator needs. Stdout stays for output: the `vswitchd: ready` line
//! and stats tables.
//!
//! Nothing logs per packet: the workers log only at start and on events
//! of the control plane.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Deserialize, Serialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `2026-11-30T03:40:00.123456Z  INFO vswitchd::daemon: message`.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`,
    /// `fields.message` and the event's other fields.
    Json,
}

/// `[log]` of the config.
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConf {
    /// Filter directives (`info`, `debug`, `vswitchd=debug,dpdk=warn`);
    /// `VSWITCHD_LOG` overrides it.
    pub level: String,
    /// Text or JSON lines.
    pub format: LogFormat,
}

impl Default for LogConf {
    fn default() -> Self {
        LogConf {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// The environment variable that overrides `[log] level`.
pub const ENV: &str = "VSWITCHD_LOG";

/// Whether `level` is a filter `init` accepts (config validation).
pub fn valid_level(level: &str) -> Result<(), String> {
    EnvFilter::from_str(level)
        .map(|_| ())
        .map_err(|e| format!("not a log filter ({e}): try info, debug or vswitchd=debug,dpdk=warn"))
}

/// Installs the process's subscriber (once; later calls do nothing, as
/// in tests that run several daemons' code in one process).
pub fn init(conf: &LogConf) {
    let filter = std::env::var(ENV)
        .ok()
        .and_then(|v| EnvFilter::from_str(&v).ok())
        .or_else(|| EnvFilter::from_str(&conf.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let _ = match conf.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(false).try_init(),
    };
}
