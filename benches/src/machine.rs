//! What the figures were measured on: CPU, cores, kernel, memory, and the
//! versions of everything in the comparison; plus the TSC rate that turns
//! a packet rate into cycles per packet.

use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

/// The machine and software of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Online CPUs.
    pub cpus: usize,
    /// TSC ticks per second, measured.
    pub tsc_hz: u64,
    /// Kernel release.
    pub kernel: String,
    /// Total memory in GiB.
    pub memory_gib: u64,
    /// 2 MB hugepages reserved.
    pub hugepages_2m: u64,
    /// Versions of the switches and tools compared.
    pub versions: Vec<(String, String)>,
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "not installed".into())
}

fn proc_field(file: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    Some(line[line.find(':')? + 1..].trim().to_string())
}

impl Machine {
    /// Describes this machine.
    pub fn describe() -> Machine {
        let kb = |k: &str| {
            proc_field("/proc/meminfo", k)
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let dpkg = |pkg: &str| first_line("dpkg-query", &["-W", "-f", "${Version}", pkg]);
        Machine {
            cpu: proc_field("/proc/cpuinfo", "model name").unwrap_or_default(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            tsc_hz: tsc_hz(),
            kernel: first_line("uname", &["-r"]),
            memory_gib: kb("MemTotal:") / (1024 * 1024),
            hugepages_2m: kb("HugePages_Total:"),
            versions: vec![
                ("vswitchd".into(), env!("CARGO_PKG_VERSION").into()),
                (
                    "DPDK (libdpdk-dev)".into(),
                    first_line("pkg-config", &["--modversion", "libdpdk"]),
                ),
                ("dpdk-testpmd (dpdk)".into(), dpkg("dpdk")),
                (
                    "Open vSwitch (openvswitch-switch-dpdk)".into(),
                    dpkg("openvswitch-switch-dpdk"),
                ),
                ("sockperf".into(), dpkg("sockperf")),
                ("iperf3".into(), dpkg("iperf3")),
            ],
        }
    }
}

/// Reads the TSC.
fn rdtsc() -> u64 {
    // SAFETY: RDTSC reads a counter; it touches no memory. Every x86_64
    // CPU has it (DPDK requires an invariant TSC anyway).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// TSC ticks per second: the TSC over 200 ms of wall clock.
pub fn tsc_hz() -> u64 {
    let (t0, c0) = (Instant::now(), rdtsc());
    std::thread::sleep(Duration::from_millis(200));
    let (dt, dc) = (t0.elapsed(), rdtsc() - c0);
    (dc as f64 / dt.as_secs_f64()) as u64
}
