//! `vswitchctl port capture`: copies of the frames a port receives or is
//! sent, written to a pcap file, for every port kind (a vhost-user NIC
//! too: frames are taken where the switch receives and sends them, not
//! from the device), while every other port's traffic goes on untouched.
//!
//! Workers copy a captured port's frames into slots allocated when the
//! capture starts, handed over through two lock-free queues (free and
//! full; crossbeam's `ArrayQueue`): no allocation, lock or syscall on a
//! worker, and nothing at all for a port that is not captured beyond one
//! predicted branch per frame sent. When the control thread falls behind,
//! frames find no free slot and are counted as `dropped`, never waited
//! for. The control thread writes the slots with `pcap-file` (Ethernet
//! link type, the capture's snap length) between its other work. A frame
//! of several segments is captured as its first segment, with its whole
//! length as the record's original length.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_queue::ArrayQueue;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use serde_json::{json, Value};
use vswitch::PortId;

/// Slots of a capture: what workers may copy before the control thread
/// (which drains them every 10 ms) writes them out.
pub const SLOTS: usize = 4096;

/// Snap length unless asked otherwise (a jumbo frame whole).
pub const DEFAULT_SNAPLEN: u32 = 9216;

/// The largest snap length (a TSO superframe whole).
pub const MAX_SNAPLEN: u32 = 65535;

/// The pcap file header's snap length (tcpdump's default).
const FILE_SNAPLEN: u32 = 262_144;

/// One copied frame.
pub struct Slot {
    ts_ns: u64,
    orig_len: u32,
    len: u32,
    data: Box<[u8]>,
}

/// What workers see of a running capture.
pub struct Capture {
    /// The captured port.
    pub port: PortId,
    /// Frames it receives.
    pub rx: bool,
    /// Frames sent to it.
    pub tx: bool,
    /// Frames still to take (a count limit; `i64::MAX` without one).
    left: AtomicI64,
    free: ArrayQueue<Box<Slot>>,
    full: ArrayQueue<Box<Slot>>,
    /// Frames that found no free slot.
    dropped: AtomicU64,
}

impl Capture {
    /// Copies one frame (`data` its first segment, `len` its whole
    /// length) taken at `ts_ns` on the workers' clock.
    #[inline]
    pub fn copy(&self, data: &[u8], len: u32, ts_ns: u64) {
        if self.left.fetch_sub(1, Ordering::Relaxed) <= 0 {
            return;
        }
        let Some(mut s) = self.free.pop() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let n = data.len().min(s.data.len());
        s.data[..n].copy_from_slice(&data[..n]);
        s.len = n as u32;
        s.orig_len = len.max(n as u32);
        s.ts_ns = ts_ns;
        // Cannot be full: there are as many slots as places.
        let _ = self.full.push(s);
    }
}

/// Which way frames are captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Frames the port receives (what the container sends).
    Rx,
    /// Frames the switch sends to the port.
    Tx,
    /// Both.
    Both,
}

/// A capture's limits and file, as asked for.
#[derive(Debug, Clone)]
pub struct Request {
    /// The port's name (for status).
    pub name: String,
    /// Its switch port.
    pub port: PortId,
    /// Where the pcap goes (an absolute path).
    pub file: PathBuf,
    /// Which frames.
    pub direction: Direction,
    /// Stop after this many frames.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Bytes kept of each frame.
    pub snaplen: u32,
}

/// The control thread's side of a running capture.
pub struct Job {
    req: Request,
    cap: Arc<Capture>,
    /// Taken when it finishes (to flush the file).
    writer: Option<PcapWriter<BufWriter<File>>>,
    started: Instant,
    /// Wall-clock time at the workers' clock's `ns0`.
    wall0: SystemTime,
    ns0: u64,
    written: u64,
    error: Option<String>,
}

/// Checks a capture file path before anything is started: absolute, in
/// a directory that exists, and not something other than a file.
pub fn check_file(file: &Path) -> Result<(), String> {
    if !file.is_absolute() {
        return Err(format!(
            "{}: give an absolute path (vswitchd writes it)",
            file.display()
        ));
    }
    match file.parent() {
        Some(d) if d.is_dir() => {}
        _ => return Err(format!("{}: its directory does not exist", file.display())),
    }
    match std::fs::symlink_metadata(file) {
        Ok(m) if !m.file_type().is_file() => Err(format!(
            "{} exists and is not a regular file",
            file.display()
        )),
        _ => Ok(()),
    }
}

impl Job {
    /// Opens the file and the slots; `now_ns` is the workers' clock now.
    pub fn start(req: Request, now_ns: u64) -> Result<Job, String> {
        check_file(&req.file)?;
        let f = File::create(&req.file).map_err(|e| format!("{}: {e}", req.file.display()))?;
        // The file's snap length is tcpdump's default, the largest a
        // record may claim: records keep `snaplen` bytes (their caplen)
        // and their frame's whole length, which readers (pcap-file's
        // own) refuse above the file's snap length.
        let header = PcapHeader {
            snaplen: FILE_SNAPLEN,
            ..Default::default()
        };
        let writer = PcapWriter::with_header(BufWriter::new(f), header)
            .map_err(|e| format!("{}: {e}", req.file.display()))?;
        let free = ArrayQueue::new(SLOTS);
        for _ in 0..SLOTS {
            let _ = free.push(Box::new(Slot {
                ts_ns: 0,
                orig_len: 0,
                len: 0,
                data: vec![0; req.snaplen as usize].into_boxed_slice(),
            }));
        }
        let cap = Arc::new(Capture {
            port: req.port,
            rx: req.direction != Direction::Tx,
            tx: req.direction != Direction::Rx,
            left: AtomicI64::new(
                req.count
                    .map_or(i64::MAX, |c| c.min(i64::MAX as u64) as i64),
            ),
            free,
            full: ArrayQueue::new(SLOTS),
            dropped: AtomicU64::new(0),
        });
        Ok(Job {
            req,
            cap,
            writer: Some(writer),
            started: Instant::now(),
            wall0: SystemTime::now(),
            ns0: now_ns,
            written: 0,
            error: None,
        })
    }

    /// What workers use.
    pub fn capture(&self) -> Arc<Capture> {
        Arc::clone(&self.cap)
    }

    /// Writes what workers copied and gives the slots back.
    pub fn drain(&mut self) {
        while let Some(s) = self.cap.full.pop() {
            if let (None, Some(w)) = (&self.error, self.writer.as_mut()) {
                let since = Duration::from_nanos(s.ts_ns.saturating_sub(self.ns0));
                let ts = self
                    .wall0
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    + since;
                let p = PcapPacket::new(ts, s.orig_len, &s.data[..s.len as usize]);
                match w.write_packet(&p) {
                    Ok(_) => self.written += 1,
                    Err(e) => self.error = Some(e.to_string()),
                }
            }
            let _ = self.cap.free.push(s);
        }
    }

    /// Whether its count or duration is reached.
    pub fn done(&self) -> bool {
        let counted = self
            .req
            .count
            .is_some_and(|c| self.written + self.cap.dropped.load(Ordering::Relaxed) >= c);
        counted
            || self
                .req
                .duration
                .is_some_and(|d| self.started.elapsed() >= d)
            || self.error.is_some()
    }

    /// Ends it once no worker copies any more: the last slots written,
    /// the file flushed. Its status.
    pub fn finish(mut self) -> Value {
        self.drain();
        if let Some(w) = self.writer.take() {
            if let Err(e) = w.into_writer().flush() {
                self.error.get_or_insert(e.to_string());
            }
        }
        self.status(false)
    }

    /// Where it is.
    pub fn status(&self, running: bool) -> Value {
        json!({
            "running": running,
            "port": self.req.name,
            "file": self.req.file,
            "direction": self.req.direction,
            "frames": self.written,
            "dropped": self.cap.dropped.load(Ordering::Relaxed),
            "secs": self.started.elapsed().as_secs_f64(),
            "error": self.error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(file: PathBuf, count: Option<u64>) -> Request {
        Request {
            name: "p".into(),
            port: PortId(3),
            file,
            direction: Direction::Both,
            count,
            duration: None,
            snaplen: 64,
        }
    }

    #[test]
    fn copies_become_pcap_records_in_order_within_the_count() {
        let dir = std::env::temp_dir().join(format!("vs-capture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.pcap");
        let mut job = Job::start(request(file.clone(), Some(3)), 1_000).unwrap();
        let cap = job.capture();
        for i in 0..5u8 {
            // A 100-byte frame kept to the 64-byte snap length.
            cap.copy(&[i; 100], 100, 1_000 + u64::from(i) * 1_000);
        }
        job.drain();
        assert!(job.done());
        let status = job.finish();
        assert_eq!(status["frames"], 3);
        let mut r = pcap_file::pcap::PcapReader::new(File::open(&file).unwrap()).unwrap();
        let mut seen = Vec::new();
        while let Some(p) = r.next_packet() {
            let p = p.unwrap();
            assert_eq!((p.orig_len, p.data.len()), (100, 64));
            seen.push(p.data[0]);
        }
        assert_eq!(seen, [0, 1, 2], "the first three, in order");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_queue_counts_drops_instead_of_waiting() {
        let dir = std::env::temp_dir().join(format!("vs-capture-d{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut job = Job::start(request(dir.join("d.pcap"), None), 0).unwrap();
        let cap = job.capture();
        for _ in 0..SLOTS + 10 {
            cap.copy(&[1; 60], 60, 0);
        }
        assert_eq!(cap.dropped.load(Ordering::Relaxed), 10);
        job.drain();
        assert_eq!(job.status(true)["frames"], SLOTS as u64);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_paths_are_checked_first() {
        assert!(check_file(Path::new("rel.pcap"))
            .unwrap_err()
            .contains("absolute"));
        assert!(check_file(Path::new("/nonexistent-dir/x.pcap")).is_err());
        assert!(check_file(Path::new("/tmp"))
            .unwrap_err()
            .contains("not a regular file"));
    }
}
