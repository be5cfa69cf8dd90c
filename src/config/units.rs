//! Rates and sizes with units in the config, as `tc` writes them: a
//! plain number (`10_000_000`) or a string with a multiplier and a unit
//! word (`"10mbit"`, `"1.5gbit"`, `"64k"`, `"2mb"`, `"100kpps"`). Rate
//! multipliers are decimal (k = 1000), byte sizes binary (k = 1024, as
//! tc's burst), packet counts decimal. The word must fit what the QoS
//! policy counts (`bit` for a bit-rate policy, `pps`/`pkt` for packets);
//! a bare multiplier fits either.

use serde::Deserialize;

/// What a value counts: a rate or a burst, of a policy in bits (bursts
/// in bytes) or in packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// bit/s.
    BitRate,
    /// Bytes.
    Bytes,
    /// Packets per second.
    PacketRate,
    /// Packets.
    Packets,
}

/// A number as written, before its measure is known.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "Written")]
pub struct Quantity {
    mantissa: f64,
    /// The multiplier's power: 0 none, 1 k, 2 m, 3 g, 4 t.
    power: i32,
    word: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Written {
    Number(u64),
    Text(String),
}

impl TryFrom<Written> for Quantity {
    type Error = String;

    fn try_from(w: Written) -> Result<Quantity, String> {
        match w {
            Written::Number(n) => Ok(Quantity {
                mantissa: n as f64,
                power: 0,
                word: String::new(),
            }),
            Written::Text(s) => Quantity::parse(&s),
        }
    }
}

impl Quantity {
    fn parse(s: &str) -> Result<Quantity, String> {
        let bad = || {
            format!(
                "{s:?} is not a quantity: a number, or a string like \"10mbit\", \"1.5gbit\", \
                 \"64k\", \"2mb\" or \"100kpps\""
            )
        };
        let t = s.trim().to_ascii_lowercase().replace('_', "");
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, rest) = t.split_at(split);
        let mantissa: f64 = num.parse().map_err(|_| bad())?;
        let rest = rest.trim();
        let (power, word) = match rest.chars().next() {
            Some('k') => (1, &rest[1..]),
            Some('m') => (2, &rest[1..]),
            Some('g') => (3, &rest[1..]),
            Some('t') => (4, &rest[1..]),
            _ => (0, rest),
        };
        if ![
            "", "bit", "bits", "b", "byte", "bytes", "pps", "pkt", "pkts", "packets",
        ]
        .contains(&word)
            || !mantissa.is_finite()
        {
            return Err(bad());
        }
        Ok(Quantity {
            mantissa,
            power,
            word: word.to_string(),
        })
    }

    /// Its value as `m`, or why it is not one.
    pub fn value(&self, m: Measure) -> Result<u64, String> {
        let fits = match self.word.as_str() {
            "" => true,
            "bit" | "bits" => m == Measure::BitRate,
            "b" | "byte" | "bytes" => m == Measure::Bytes,
            _ => matches!(m, Measure::PacketRate | Measure::Packets),
        };
        if !fits {
            return Err(format!(
                "`{}` does not fit here: this is {}",
                self.word,
                match m {
                    Measure::BitRate => "a rate in bit/s (\"10mbit\")",
                    Measure::Bytes => "a burst in bytes (\"64k\", \"64kb\")",
                    Measure::PacketRate => "a rate in packets/s (\"100kpps\")",
                    Measure::Packets => "a burst in packets (\"1k\")",
                }
            ));
        }
        let base: f64 = if m == Measure::Bytes { 1024.0 } else { 1000.0 };
        let v = self.mantissa * base.powi(self.power);
        if v > u64::MAX as f64 || v.fract() != 0.0 && self.power == 0 {
            return Err(format!("{} is not a whole number of units", self.mantissa));
        }
        Ok(v.round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn units_scale_as_tc_writes_them() {
        assert_eq!(q("10mbit").value(Measure::BitRate), Ok(10_000_000));
        assert_eq!(q("1.5gbit").value(Measure::BitRate), Ok(1_500_000_000));
        assert_eq!(q("64k").value(Measure::Bytes), Ok(65_536));
        assert_eq!(q("2mb").value(Measure::Bytes), Ok(2 << 20));
        assert_eq!(q("100kpps").value(Measure::PacketRate), Ok(100_000));
        assert_eq!(q("1_000").value(Measure::Packets), Ok(1000));
        assert!(q("10mbit")
            .value(Measure::Bytes)
            .unwrap_err()
            .contains("burst in bytes"));
        assert!(q("5pps").value(Measure::BitRate).is_err());
        assert!(Quantity::parse("ten mbit").is_err());
        assert!(Quantity::parse("10furlongs").is_err());
    }

    #[test]
    fn plain_numbers_and_strings_both_deserialize() {
        #[derive(Deserialize)]
        struct T {
            a: Quantity,
            b: Quantity,
        }
        let t: T = toml::from_str("a = 12345\nb = \"64k\"\n").unwrap();
        assert_eq!(t.a.value(Measure::BitRate), Ok(12345));
        assert_eq!(t.b.value(Measure::Bytes), Ok(65536));
        let e = toml::from_str::<T>("a = 1\nb = \"lots\"\n").err().unwrap();
        assert!(e.to_string().contains("is not a quantity"), "{e}");
    }
}
