//! A child process whose output lines are collected, killed on drop.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running child with its stdout+stderr lines captured.
pub struct Proc {
    name: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
    /// Output streams read to their end (2 when both are).
    drained: Arc<AtomicUsize>,
}

impl Proc {
    /// Spawns `cmd` with piped stdin/stdout/stderr.
    pub fn spawn(name: &str, mut cmd: Command) -> std::io::Result<Proc> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let drained = Arc::new(AtomicUsize::new(0));
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        for stream in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err),
        ] {
            let lines = Arc::clone(&lines);
            let drained = Arc::clone(&drained);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().expect("lines").push(line);
                }
                drained.fetch_add(1, Ordering::Release);
            });
        }
        let stdin = child.stdin.take();
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            stdin,
            lines,
            drained,
        })
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything printed so far.
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// Number of lines printed so far.
    pub fn line_count(&self) -> usize {
        self.lines.lock().expect("lines").len()
    }

    /// Waits up to `timeout` for a printed line matching `pred`; false if
    /// it exits or the time passes first.
    pub fn wait_for_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        crate::wait_until(timeout, || {
            self.exit_code().is_some() || self.output().iter().any(|l| pred(l))
        }) && self.exit_code().is_none()
    }

    /// Writes a line to its stdin.
    pub fn send(&mut self, line: &str) {
        if let Some(s) = self.stdin.as_mut() {
            let _ = writeln!(s, "{line}");
            let _ = s.flush();
        }
    }

    /// Whether it has exited; its exit code if so.
    pub fn exit_code(&mut self) -> Option<i32> {
        let c = self.child.as_mut()?;
        c.try_wait().ok().flatten().map(|s| s.code().unwrap_or(-1))
    }

    /// Waits up to `timeout` for it to exit by itself; once it has, its
    /// last lines are collected too (bounded: a daemon it left behind may
    /// hold the pipes open).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut code = None;
        crate::wait_until(timeout, || {
            code = self.exit_code();
            code.is_some()
        });
        if code.is_some() {
            crate::wait_until(Duration::from_secs(2), || {
                self.drained.load(Ordering::Acquire) == 2
            });
        }
        code
    }

    /// Sends `sig` (a libc signal number) if it still runs.
    pub fn signal(&mut self, sig: i32) {
        if self.exit_code().is_none() {
            if let Some(c) = self.child.as_ref() {
                // kill(2) on our own, still running child.
                unsafe { libc::kill(c.id() as i32, sig) };
            }
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns the exit code.
    pub fn stop(&mut self, grace: Duration) -> Option<i32> {
        let pid = self.child.as_ref()?.id() as i32;
        // kill(2) on our own child: no memory is involved.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        if let Some(code) = self.wait_exit(grace) {
            return Some(code);
        }
        eprintln!(
            "testbed: {} ignored SIGTERM for {grace:?}; killing it",
            self.name
        );
        let c = self.child.as_mut()?;
        let _ = c.kill();
        c.wait().ok().and_then(|s| s.code())
    }

    /// Prints its output (for a failing test's log).
    pub fn dump(&self) {
        for l in self.output() {
            eprintln!("[{}] {l}", self.name);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exit_code().is_none() {
            self.stop(Duration::from_secs(10));
        }
    }
}
