//! The state file: the running config as of the last committed change, so
//! that a restart, or a crash, loses nothing a client was told was done.
//!
//! Every change through the control socket (a CNI ADD, `port add`, a new
//! security group, a tunnel) edits the config document and commits it
//! (see `admin`); the commit writes the whole document here before the
//! client gets its answer. The write is atomic: a temporary file in the
//! same directory, fsync, rename over the old one, fsync of the directory.
//! A SIGKILL or power cut leaves either the old state or the new one,
//! never half of each.
//!
//! At start, a state file wins over the config file: it *is* the config
//! file plus everything changed at run time (OVS's database plays this
//! part). Its first line records a hash of the config file it grew from;
//! when the config file has changed since, vswitchd still starts from the
//! state and says so (its changes would otherwise be lost silently), and
//! the operator chooses: `vswitchctl config dump` shows the running
//! config, and removing the state file starts from the config file.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use vswitch::types::fnv;

/// Where and for which config file the state is kept.
pub struct StateFile {
    path: PathBuf,
    /// Hash of the config file's text.
    config_hash: u64,
}

/// A state file read at start.
pub struct Loaded {
    /// The document (a config file's text).
    pub text: String,
    /// The config file changed since this state was written.
    pub config_changed: bool,
}

const HEADER: &str = "# vswitchd state: the running config, written at every committed change";

impl StateFile {
    /// The state kept at `path` for a config file of `config_text`.
    pub fn new(path: &Path, config_text: &str) -> StateFile {
        StateFile {
            path: path.to_path_buf(),
            config_hash: fnv(&[config_text]),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved state, if there is one.
    pub fn load(&self) -> io::Result<Option<Loaded>> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let recorded = text
            .lines()
            .nth(1)
            .and_then(|l| l.strip_prefix("# config-hash: "))
            .and_then(|h| u64::from_str_radix(h.trim(), 16).ok());
        Ok(Some(Loaded {
            config_changed: recorded != Some(self.config_hash),
            text,
        }))
    }

    /// Replaces the state with `doc_text` atomically (see the module
    /// documentation).
    pub fn save(&self, doc_text: &str) -> io::Result<()> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        fs::create_dir_all(dir)?;
        let name = self
            .path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
        {
            let mut f = File::create(&tmp)?;
            write!(
                f,
                "{HEADER}\n# config-hash: {:016x}\n{doc_text}",
                self.config_hash
            )?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_atomically_and_knows_its_config() {
        let dir = std::env::temp_dir().join(format!("vs-state-{}", std::process::id()));
        let path = dir.join("sub/state.toml");
        let s = StateFile::new(&path, "config v1");
        assert!(s.load().unwrap().is_none());
        s.save("[[port]]\nname = \"a\"\n").unwrap();
        s.save("[[port]]\nname = \"b\"\n").unwrap();
        let l = s.load().unwrap().unwrap();
        assert!(l.text.ends_with("name = \"b\"\n"), "{}", l.text);
        assert!(!l.config_changed);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.toml"]);
        // The same state under an edited config file.
        assert!(
            StateFile::new(&path, "config v2")
                .load()
                .unwrap()
                .unwrap()
                .config_changed
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
