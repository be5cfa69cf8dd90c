//! Harness K (placeholder while written).
use std::path::PathBuf;
/// Options.
pub struct Opts {
    /// Seconds per test.
    pub seconds: u64,
    /// vswitchd.
    pub vswitchd: PathBuf,
}
/// Runs.
pub fn run(_o: &Opts, command: &str) -> anyhow::Result<crate::report::Section> {
    Ok(crate::report::Section::new("K", "todo", command, &[]))
}
