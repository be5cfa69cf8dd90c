//! Aligned text tables and units for what people read (vswitchctl's
//! answers, the stats table): each column as wide as its widest cell,
//! numbers right-aligned, durations, shares and sizes with their units.
//! Hand-written: a few dozen lines, where a table crate would bring box
//! drawing and terminal handling that pipes and logs do not want.

use std::fmt::Write as _;

/// A table of text cells.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// (header, right-aligned)
    cols: Vec<(String, bool)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns by header; a header written `">name"` is right-aligned
    /// (numbers), shown as `name`.
    pub fn new<S: AsRef<str>>(headers: &[S]) -> Table {
        Table {
            cols: headers
                .iter()
                .map(|h| {
                    let h = h.as_ref();
                    match h.strip_prefix('>') {
                        Some(n) => (n.to_string(), true),
                        None => (h.to_string(), false),
                    }
                })
                .collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank, extra ones dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines: header, then rows, columns two spaces apart,
    /// no trailing blanks.
    pub fn render(&self) -> String {
        let cell = |r: &Vec<String>, i: usize| r.get(i).map_or("", String::as_str).to_string();
        let mut width: Vec<usize> = self.cols.iter().map(|(h, _)| h.chars().count()).collect();
        for r in &self.rows {
            for (i, w) in width.iter_mut().enumerate() {
                *w = (*w).max(cell(r, i).chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.cols.iter().map(|(h, _)| h.clone()).collect();
        for r in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (w, (_, right))) in width.iter().zip(&self.cols).enumerate() {
                let c = cell(r, i);
                let pad = w - c.chars().count();
                if i > 0 {
                    line.push_str("  ");
                }
                if *right {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(&c);
                } else {
                    line.push_str(&c);
                    line.push_str(&" ".repeat(pad));
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out
    }
}

/// A share in percent: `97.3 %`.
pub fn pct(v: f64) -> String {
    format!("{v:.1} %")
}

/// A duration given in nanoseconds, in the unit that reads best:
/// `850 ns`, `12.3 us`, `4.56 ms`, `1.20 s`.
pub fn duration_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} us", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// A size in bytes with a binary unit: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A rate or quantity with one decimal (cycles per packet, ratios).
pub fn decimal(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_numbers_go_right() {
        let mut t = Table::new(&["port", ">rx", "kind"]);
        t.row(vec!["c1".into(), "5".into(), "tap".into()]);
        t.row(vec!["uplink".into(), "12345".into(), "af-xdp".into()]);
        assert_eq!(
            t.render(),
            "port       rx  kind\nc1          5  tap\nuplink  12345  af-xdp\n"
        );
    }

    #[test]
    fn units_read_as_people_write_them() {
        assert_eq!(pct(97.349), "97.3 %");
        assert_eq!(duration_ns(850.2), "850 ns");
        assert_eq!(duration_ns(12_340.0), "12.3 us");
        assert_eq!(duration_ns(4_560_000.0), "4.56 ms");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }
}
