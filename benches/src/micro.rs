//! The criterion micro-benchmarks (benches/stages.rs) as a report section:
//! reads criterion's saved estimates and turns time per burst into
//! ns/packet and cycles/packet.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::report::Section;

/// Reads every benchmark under `criterion_dir` (target/criterion).
pub fn section(criterion_dir: &Path, hz: u64, command: &str) -> Result<Section> {
    let mut sec = Section::new(
        "M",
        "micro-benchmarks, one stage on a 32-frame burst",
        command,
        &["ns/pkt", "cycles/pkt", "ns/burst"],
    );
    sec.heads = ("stage".into(), "benchmark".into());
    sec.notes = vec![
        "criterion median time per burst of 32 frames / 32; cycles at the measured TSC rate. \
         Pinned to the switch core with taskset. No peer: these locate cost inside vswitchd."
            .into(),
    ];
    let mut found = Vec::new();
    for group in std::fs::read_dir(criterion_dir).with_context(|| {
        format!(
            "{}: run the micro-benchmarks first",
            criterion_dir.display()
        )
    })? {
        let group = group?.path();
        if !group.is_dir() || group.ends_with("report") {
            continue;
        }
        for bench in std::fs::read_dir(&group)? {
            let dir = bench?.path().join("new");
            let (Ok(meta), Ok(est)) = (
                std::fs::read_to_string(dir.join("benchmark.json")),
                std::fs::read_to_string(dir.join("estimates.json")),
            ) else {
                continue;
            };
            let meta: Value = serde_json::from_str(&meta)?;
            let est: Value = serde_json::from_str(&est)?;
            let elems = meta["throughput"]["Elements"].as_f64().unwrap_or(1.0);
            let ns = est["median"]["point_estimate"].as_f64().unwrap_or(0.0);
            found.push((
                meta["group_id"].as_str().unwrap_or("?").to_string(),
                meta["function_id"].as_str().unwrap_or("?").to_string(),
                ns,
                elems,
            ));
        }
    }
    found.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    for (group, func, ns, elems) in found {
        let per = ns / elems;
        sec.row(
            &group,
            &func,
            &[
                ("ns/pkt", per),
                ("cycles/pkt", per * hz as f64 / 1e9),
                ("ns/burst", ns),
            ],
            "",
        );
    }
    Ok(sec)
}
