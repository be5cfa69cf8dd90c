//! Harness V (placeholder while written).
use std::path::PathBuf;
use std::time::Duration;
/// Options.
pub struct Opts {
    /// Warm-up.
    pub warmup: Duration,
    /// Window.
    pub window: Duration,
    /// vswitchd.
    pub vswitchd: PathBuf,
    /// latprobe.
    pub latprobe: PathBuf,
    /// smoke.
    pub smoke: bool,
}
/// Runs.
pub fn run(_o: &Opts, _hz: u64, command: &str) -> anyhow::Result<crate::report::Section> {
    Ok(crate::report::Section::new("V", "todo", command, &[]))
}
