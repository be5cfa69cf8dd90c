//! What else ran during a measurement window: per-process CPU time from
//! /proc, so a row whose rate dropped can show whether another process
//! (a peer not yet gone, a daemon waking up) took the cores the systems
//! under test were given; and each CPU's steal time (/proc/stat), the
//! time the hypervisor ran something else on it, which no process here
//! shows.

use std::collections::HashMap;
use std::time::Instant;

/// CPU time of every process at one instant.
pub struct Sample {
    /// pid -> (command name, utime + stime in clock ticks).
    procs: HashMap<u32, (String, u64)>,
    /// Per CPU: steal time in clock ticks.
    steal: Vec<u64>,
    at: Instant,
}

/// Each CPU's steal ticks: the 8th value of its `cpuN` line in /proc/stat.
fn steal() -> Vec<u64> {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            l.split_whitespace()
                .nth(8)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        })
        .collect()
}

/// Reads /proc/PID/stat of every process.
pub fn sample() -> Sample {
    let mut procs = HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ... utime stime ...": comm may hold spaces,
        // so fields are counted after its closing parenthesis.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // utime and stime are fields 14 and 15 of stat; 12 and 13 here.
        procs.insert(pid, (comm, ticks(11) + ticks(12)));
    }
    Sample {
        procs,
        steal: steal(),
        at: Instant::now(),
    }
}

/// Processes other than `expected` (command names) that used at least
/// `min_pct` of one CPU between `a` and `b`, busiest first, as
/// "name 12%" items; then CPUs the hypervisor took at least `min_pct`
/// of, as "steal cpu1 12%".
pub fn others(a: &Sample, b: &Sample, expected: &[&str], min_pct: f64) -> Vec<String> {
    // USER_HZ, the unit of /proc's times: 100 on x86-64 Linux (ABI).
    let hz = 100.0;
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
    let mut v: Vec<(f64, &str)> = b
        .procs
        .iter()
        .filter(|(_, (comm, _))| !expected.contains(&comm.as_str()))
        .filter_map(|(pid, (comm, t1))| {
            let t0 = a.procs.get(pid).map_or(0, |p| p.1);
            let pct = 100.0 * t1.saturating_sub(t0) as f64 / hz / secs;
            (pct >= min_pct).then_some((pct, comm.as_str()))
        })
        .collect();
    v.sort_by(|x, y| y.0.total_cmp(&x.0));
    let mut out: Vec<String> = v.into_iter().map(|(p, c)| format!("{c} {p:.0}%")).collect();
    for (cpu, (s0, s1)) in a.steal.iter().zip(&b.steal).enumerate() {
        let pct = 100.0 * s1.saturating_sub(*s0) as f64 / hz / secs;
        if pct >= min_pct {
            out.push(format!("steal cpu{cpu} {pct:.0}%"));
        }
    }
    out
}

/// The command names of the processes that poll at 100 % by design in a
/// harness run: the generator/container testpmds and the switches
/// (Debian's DPDK build of OVS runs as `ovs-vswitchd-dpdk`, which the
/// kernel's 15-character command name cuts to `ovs-vswitchd-dp`).
pub const EXPECTED: &[&str] = &[
    "dpdk-testpmd",
    "vswitchd",
    "ovs-vswitchd",
    "ovs-vswitchd-dp",
];

/// Waits (at most 20 s) until no process of [`EXPECTED`] is alive: the
/// previous system's switch or generator still exiting would share the
/// next one's CPUs, and the window's check cannot tell it from the
/// system under test (same command names). Returns those still alive
/// then, as "leftover name (pid N)" items for the row's note.
pub fn settle() -> Vec<String> {
    let alive = || -> Vec<String> {
        sample()
            .procs
            .iter()
            .filter(|(_, (comm, _))| EXPECTED.contains(&comm.as_str()))
            .map(|(pid, (comm, _))| format!("leftover {comm} (pid {pid})"))
            .collect()
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left = alive();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// What else ran, per system and round, for the rows' notes.
#[derive(Default)]
pub struct PerRound(Vec<(String, Vec<String>)>);

impl PerRound {
    /// Records one round of `system`.
    pub fn push(&mut self, system: &str, others: &[String]) {
        let seen = if others.is_empty() {
            "-".to_string()
        } else {
            others.join(", ")
        };
        match self.0.iter_mut().find(|(n, _)| n == system) {
            Some((_, v)) => v.push(seen),
            None => self.0.push((system.to_string(), vec![seen])),
        }
    }

    /// "other processes ...: a / b / c" for `system`'s note.
    pub fn note(&self, system: &str) -> String {
        let rounds = self
            .0
            .iter()
            .find(|(n, _)| n == system)
            .map_or(String::new(), |(_, v)| v.join(" / "));
        format!("other processes (and hypervisor steal) >= 2 % of a CPU per round: {rounds}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cpu_has_a_steal_count() {
        let n = std::thread::available_parallelism().unwrap().get();
        assert!(steal().len() >= n, "{:?}", steal());
    }

    #[test]
    fn a_busy_thread_of_this_process_shows() {
        let a = sample();
        let stop = std::time::Instant::now() + std::time::Duration::from_millis(300);
        let mut x = 0u64;
        while std::time::Instant::now() < stop {
            x = x.wrapping_add(1);
        }
        std::hint::black_box(x);
        let b = sample();
        let me = std::fs::read_to_string("/proc/self/comm").unwrap();
        let o = others(&a, &b, &[], 30.0);
        assert!(o.iter().any(|s| s.starts_with(me.trim())), "{o:?}");
        assert!(others(&a, &b, &[me.trim()], 30.0)
            .iter()
            .all(|s| !s.starts_with(me.trim())));
    }
}
