//! Writing and reading classic pcap files (the format net_pcap replays).
//!
//! Hand-written rather than a crate: the format is a 24-byte file header
//! and a 16-byte header per record; the generator only ever writes
//! Ethernet frames with a zero timestamp, and the tests read them back.

use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

const MAGIC: u32 = 0xa1b2_c3d4;
const LINKTYPE_ETHERNET: u32 = 1;
const SNAPLEN: u32 = 65_535;

/// Writes `frames` to `path` as a pcap file.
pub fn write(path: &Path, frames: &[Vec<u8>]) -> io::Result<()> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    w.write_all(&MAGIC.to_le_bytes())?;
    w.write_all(&2u16.to_le_bytes())?;
    w.write_all(&4u16.to_le_bytes())?;
    w.write_all(&[0; 8])?; // thiszone, sigfigs
    w.write_all(&SNAPLEN.to_le_bytes())?;
    w.write_all(&LINKTYPE_ETHERNET.to_le_bytes())?;
    for f in frames {
        let len = u32::try_from(f.len()).expect("frame under 4 GB");
        w.write_all(&[0; 8])?; // ts_sec, ts_usec
        w.write_all(&len.to_le_bytes())?;
        w.write_all(&len.to_le_bytes())?;
        w.write_all(f)?;
    }
    w.flush()
}

/// Reads every frame of a little-endian pcap file (as [`write`] makes them).
pub fn read(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let mut data = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut data)?;
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
    };
    if word(0) != Some(MAGIC) {
        return Err(bad("not a little-endian microsecond pcap file"));
    }
    let mut frames = Vec::new();
    let mut at = 24;
    while at < data.len() {
        let len = word(at + 8).ok_or_else(|| bad("truncated record header"))? as usize;
        let frame = data
            .get(at + 16..at + 16 + len)
            .ok_or_else(|| bad("truncated record"))?;
        frames.push(frame.to_vec());
        at += 16 + len;
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_and_rejects_garbage() {
        let dir = std::env::temp_dir().join(testbed::unique("pcap"));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.pcap");
        let frames = vec![vec![1u8; 60], vec![2u8; 1514], vec![3u8; 14]];
        super::write(&p, &frames).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().len(),
            24 + 3 * 16 + 60 + 1514 + 14
        );
        assert_eq!(super::read(&p).unwrap(), frames);
        std::fs::write(&p, b"not a pcap").unwrap();
        assert!(super::read(&p).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
