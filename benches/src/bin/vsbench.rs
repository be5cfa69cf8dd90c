//! `vsbench`: writes the workload pcaps and runs the harnesses, printing
//! and writing the results table (markdown + JSON).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use vsbench::report::Report;
use vsbench::{harness_c, harness_d, harness_k, harness_p, harness_v, machine::Machine, workload};

#[derive(Parser)]
#[command(about = "vswitchd benchmarks against testpmd, Open vSwitch and the Linux bridge")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write every workload pcap into DIR.
    Gen {
        #[arg(long, default_value = "target/bench-pcaps")]
        dir: PathBuf,
    },
    /// Run harnesses and write the results table.
    Run {
        /// Seconds of traffic and a single configuration per peer: checks
        /// the harnesses work, measures nothing worth reading.
        #[arg(long)]
        smoke: bool,
        /// Rounds per harness: every system is measured once per round and
        /// the median round is reported (1 with --smoke).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Harnesses to run (P, V, K, D, C).
        #[arg(long, value_delimiter = ',', default_value = "P,V,K,D,C")]
        harness: Vec<String>,
        /// The vswitchd binary.
        #[arg(long, default_value = "target/release/vswitchd")]
        vswitchd: PathBuf,
        /// The latency probe binary.
        #[arg(long, default_value = "target/release/latprobe")]
        latprobe: PathBuf,
        /// Where the workload pcaps go.
        #[arg(long, default_value = "target/bench-pcaps")]
        pcap_dir: PathBuf,
        /// Markdown output.
        #[arg(long)]
        md: Option<PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Add the micro-benchmark results criterion saved here.
        #[arg(long)]
        criterion: Option<PathBuf>,
        /// Harness P: only the workloads whose name contains this text
        /// (case-insensitive), e.g. "vxlan".
        #[arg(long)]
        workload: Option<String>,
    },
    /// Soak the DPDK-free pipeline with fuzzed frames (see vsbench::fuzz);
    /// exits 1 on any invariant violation.
    Fuzz {
        /// Frames to feed.
        #[arg(long, default_value_t = 10_000_000)]
        frames: u64,
        /// Seed (a run is reproducible from it).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Fuzz { frames, seed } => {
            let t = std::time::Instant::now();
            let soak = vsbench::fuzz::run(seed, frames);
            println!(
                "{} frames (seed {seed}) in {:.1} s: {} output, {} flooded, {} into tunnels, \
                 drops {:?}; {} decapsulated, {} virtio-net headers accepted, {} superframes segmented",
                soak.frames,
                t.elapsed().as_secs_f64(),
                soak.outputs,
                soak.floods,
                soak.tunnelled,
                soak.drops,
                soak.decapsulated,
                soak.offloads,
                soak.segmented
            );
            for v in &soak.violations {
                println!("violation: {v}");
            }
            if !soak.violations.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Gen { dir } => {
            std::fs::create_dir_all(&dir)?;
            for w in workload::ALL {
                let p = w.write_to(&dir)?;
                println!("{}", p.display());
            }
            Ok(())
        }
        Cmd::Run {
            smoke,
            rounds,
            harness,
            vswitchd,
            latprobe,
            pcap_dir,
            md,
            json,
            criterion,
            workload,
        } => {
            let machine = Machine::describe();
            let hz = machine.tsc_hz;
            let (warmup, window, rounds) = if smoke {
                (Duration::from_secs(1), Duration::from_secs(2), 1)
            } else {
                (Duration::from_secs(3), Duration::from_secs(6), rounds)
            };
            let command = |h: &str| {
                format!(
                    "bash scripts/bench.sh --harness {h}{}",
                    if smoke { " --smoke" } else { "" }
                )
            };
            let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
            let mut report = Report {
                date: now_utc(),
                mode: if smoke { "smoke" } else { "full" }.into(),
                machine,
                sections: Vec::new(),
            };
            if let Some(dir) = criterion {
                let cmd = "taskset -c 1 cargo bench -p vsbench --bench stages";
                report
                    .sections
                    .push(vsbench::micro::section(&dir, hz, cmd)?);
            }
            for h in harness.iter().filter(|h| !h.is_empty()) {
                let sec = match h.to_ascii_uppercase().as_str() {
                    "P" => harness_p::run(
                        &harness_p::Opts {
                            warmup,
                            window,
                            pcap_dir: abs(pcap_dir.clone()),
                            vswitchd: abs(vswitchd.clone()),
                            rounds,
                            smoke,
                            workload: workload.clone(),
                        },
                        hz,
                        &command("P"),
                    )
                    .context("harness P")?,
                    "V" => harness_v::run(
                        &harness_v::Opts {
                            warmup,
                            window,
                            vswitchd: abs(vswitchd.clone()),
                            latprobe: abs(latprobe.clone()),
                            rounds,
                            smoke,
                        },
                        hz,
                        &command("V"),
                    )
                    .context("harness V")?,
                    "K" => harness_k::run(
                        &harness_k::Opts {
                            seconds: window.as_secs().max(1),
                            rounds,
                            vswitchd: abs(vswitchd.clone()),
                        },
                        &command("K"),
                    )
                    .context("harness K")?,
                    "D" => harness_d::run(
                        &harness_d::Opts {
                            vswitchd: abs(vswitchd.clone()),
                            cni: abs(vswitchd.with_file_name("vswitch-cni")),
                            sequential: if smoke { 5 } else { 200 },
                            concurrent: if smoke { 3 } else { 50 },
                            pcap_dir: abs(pcap_dir.clone()),
                            rounds,
                            warmup,
                            window,
                            idle_nics: if smoke { 10 } else { 498 },
                        },
                        &command("D"),
                    )
                    .context("harness D")?,
                    "C" => harness_c::run(
                        &harness_c::Opts {
                            vswitchd: abs(vswitchd.clone()),
                            agent: abs(vswitchd.with_file_name("vswitch-agent")),
                            trials: if smoke { 3 } else { 100 },
                            populations: if smoke {
                                vec![1, 100]
                            } else {
                                vec![1, 100, 10_000]
                            },
                        },
                        &command("C"),
                    )
                    .context("harness C")?,
                    other => anyhow::bail!("unknown harness {other:?} (P, V, K, D, C)"),
                };
                // Progress as we go: a full run takes minutes.
                eprintln!("vsbench: harness {h} done: {} rows", sec.rows.len());
                report.sections.push(sec);
            }
            println!("{}", report.markdown());
            if let Some(p) = md {
                std::fs::write(&p, report.markdown()).with_context(|| p.display().to_string())?;
            }
            if let Some(p) = json {
                std::fs::write(&p, serde_json::to_string_pretty(&report)?)
                    .with_context(|| p.display().to_string())?;
            }
            Ok(())
        }
    }
}

/// The current UTC time, RFC 3339, from `date` (no time crate for one line).
fn now_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
