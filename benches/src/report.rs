//! The results table: one section per harness, rows of figures per system
//! and workload, and the ratios of vswitchd against each peer measured in
//! the same run. Written as markdown (benches/RESULTS.md) and JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::machine::Machine;

/// One system measured on one workload.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What traffic and work.
    pub workload: String,
    /// Which switch, configured how.
    pub system: String,
    /// Figures by column name.
    pub values: BTreeMap<String, f64>,
    /// Anything the reader must know about this row.
    pub note: String,
}

/// vswitchd's figure divided by a peer's.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// The workload.
    pub workload: String,
    /// "vswitchd / PEER" and the figure.
    pub what: String,
    /// The ratio (> 1: vswitchd is better for rates, worse for latencies).
    pub value: f64,
}

/// One harness's results.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    /// Short id ("P", "V", "K").
    pub id: String,
    /// Heading.
    pub title: String,
    /// Names of the two label columns (what `Row::workload` and
    /// `Row::system` hold).
    pub heads: (String, String),
    /// The command that reproduces the section.
    pub command: String,
    /// How it was measured (pinning, windows, bottlenecks).
    pub notes: Vec<String>,
    /// Column order of the figures.
    pub columns: Vec<String>,
    /// The measurements.
    pub rows: Vec<Row>,
    /// vswitchd against its peers.
    pub ratios: Vec<Ratio>,
}

impl Section {
    /// An empty section.
    pub fn new(id: &str, title: &str, command: &str, columns: &[&str]) -> Section {
        Section {
            id: id.into(),
            title: title.into(),
            heads: ("workload".into(), "system".into()),
            command: command.into(),
            notes: Vec::new(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
            ratios: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, workload: &str, system: &str, values: &[(&str, f64)], note: &str) {
        self.rows.push(Row {
            workload: workload.into(),
            system: system.into(),
            values: values.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            note: note.into(),
        });
    }

    fn value(&self, workload: &str, system: &str, column: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.workload == workload && r.system == system)?
            .values
            .get(column)
            .copied()
    }

    /// Records `subject`'s `column` divided by each other system's on
    /// `workload` (every system measured on it), when both are non-zero.
    pub fn ratios_against_all(&mut self, workload: &str, subject: &str, column: &str) {
        let Some(mine) = self.value(workload, subject, column) else {
            return;
        };
        let peers: Vec<String> = self
            .rows
            .iter()
            .filter(|r| r.workload == workload && r.system != subject)
            .map(|r| r.system.clone())
            .collect();
        for peer in peers {
            if let Some(theirs) = self.value(workload, &peer, column).filter(|v| *v > 0.0) {
                self.ratios.push(Ratio {
                    workload: workload.into(),
                    what: format!("{subject} / {peer}, {column}"),
                    value: mine / theirs,
                });
            }
        }
    }
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When (UTC, RFC 3339).
    pub date: String,
    /// "full" or "smoke".
    pub mode: String,
    /// The machine.
    pub machine: Machine,
    /// One per harness run.
    pub sections: Vec<Section>,
}

fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Report {
    /// The markdown table (benches/RESULTS.md).
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let _ = writeln!(s, "# vswitchd benchmark results\n");
        let _ = writeln!(
            s,
            "Written by `scripts/bench.sh` ({} run, {}). Absolute figures drift between machines \
             and runs; the ratios against peers measured in the same run are what hold.\n",
            self.mode, self.date
        );
        let _ = writeln!(s, "## Machine\n");
        let _ = writeln!(s, "| | |\n| --- | --- |");
        let _ = writeln!(
            s,
            "| CPU | {} ({} CPUs, TSC {:.3} GHz) |",
            m.cpu,
            m.cpus,
            m.tsc_hz as f64 / 1e9
        );
        let _ = writeln!(s, "| kernel | {} |", m.kernel);
        let _ = writeln!(
            s,
            "| memory | {} GiB, {} x 2 MB hugepages |",
            m.memory_gib, m.hugepages_2m
        );
        for (k, v) in &m.versions {
            let _ = writeln!(s, "| {k} | {v} |");
        }
        for sec in &self.sections {
            let _ = writeln!(s, "\n## Harness {}: {}\n", sec.id, sec.title);
            let _ = writeln!(s, "Reproduce: `{}`\n", sec.command);
            for n in &sec.notes {
                let _ = writeln!(s, "- {n}");
            }
            if !sec.notes.is_empty() {
                s.push('\n');
            }
            let _ = writeln!(
                s,
                "| {} | {} | {} | note |",
                sec.heads.0,
                sec.heads.1,
                sec.columns.join(" | ")
            );
            let _ = writeln!(
                s,
                "| --- | --- |{} --- |",
                " ---: |".repeat(sec.columns.len())
            );
            for r in &sec.rows {
                let vals: Vec<String> = sec
                    .columns
                    .iter()
                    .map(|c| r.values.get(c).map_or("-".into(), |v| fmt_value(*v)))
                    .collect();
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} |",
                    r.workload,
                    r.system,
                    vals.join(" | "),
                    r.note
                );
            }
            if !sec.ratios.is_empty() {
                let _ = writeln!(s, "\n| workload | ratio | value |\n| --- | --- | ---: |");
                for r in &sec.ratios {
                    let _ = writeln!(s, "| {} | {} | {:.2} |", r.workload, r.what, r.value);
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_divide_the_subject_by_every_peer() {
        let mut s = Section::new("P", "t", "cmd", &["Mpps"]);
        s.row("w", "vswitchd", &[("Mpps", 30.0)], "");
        s.row("w", "OVS", &[("Mpps", 20.0)], "");
        s.row("w", "testpmd", &[("Mpps", 60.0)], "");
        s.row("w", "dead", &[("Mpps", 0.0)], "no traffic");
        s.row("other", "OVS", &[("Mpps", 1.0)], "");
        s.ratios_against_all("w", "vswitchd", "Mpps");
        let got: Vec<(String, f64)> = s.ratios.iter().map(|r| (r.what.clone(), r.value)).collect();
        assert_eq!(
            got,
            [
                ("vswitchd / OVS, Mpps".to_string(), 1.5),
                ("vswitchd / testpmd, Mpps".to_string(), 0.5)
            ]
        );
    }
}
