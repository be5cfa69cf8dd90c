//! Repeated, interleaved measurements. On a shared VM the machine's speed
//! drifts over minutes (neighbours, frequency), so each harness measures
//! every system once per round, rounds one after another, and reports per
//! system the round with the median rate and the spread across rounds. A
//! drift then hits every system alike instead of whichever ran during it.

/// Samples per system, in the order systems were first seen.
pub struct Rounds<T> {
    systems: Vec<(String, Vec<T>)>,
}

impl<T> Default for Rounds<T> {
    fn default() -> Self {
        Rounds {
            systems: Vec::new(),
        }
    }
}

impl<T> Rounds<T> {
    /// Records one round's sample of `system`.
    pub fn push(&mut self, system: &str, sample: T) {
        match self.systems.iter_mut().find(|(s, _)| s == system) {
            Some((_, v)) => v.push(sample),
            None => self.systems.push((system.to_string(), vec![sample])),
        }
    }

    /// Per system: the sample whose `key` is the median (the lower middle
    /// one for an even count), the spread of `key`, (max - min) / median
    /// in percent, and `key` of every round in round order.
    pub fn medians(self, key: impl Fn(&T) -> f64) -> Vec<Median<T>> {
        self.systems
            .into_iter()
            .map(|(system, mut v)| {
                let keys: Vec<f64> = v.iter().map(&key).collect();
                v.sort_by(|a, b| key(a).total_cmp(&key(b)));
                let (lo, hi) = (key(&v[0]), key(&v[v.len() - 1]));
                let sample = v.swap_remove((v.len() - 1) / 2);
                let m = key(&sample);
                let spread = if m > 0.0 { 100.0 * (hi - lo) / m } else { 0.0 };
                Median {
                    system,
                    sample,
                    spread,
                    keys,
                }
            })
            .collect()
    }
}

/// One system's result over the rounds.
pub struct Median<T> {
    /// The system.
    pub system: String,
    /// Its median round.
    pub sample: T,
    /// (max - min) / median of the key, percent.
    pub spread: f64,
    /// The key of every round, in round order.
    pub keys: Vec<f64>,
}

impl<T> Median<T> {
    /// "rounds: a / b / c" for a row's note.
    pub fn rounds_note(&self) -> String {
        let k: Vec<String> = self.keys.iter().map(|k| format!("{k:.3}")).collect();
        format!("rounds: {}", k.join(" / "))
    }
}

#[cfg(test)]
mod tests {
    use super::Rounds;

    #[test]
    fn picks_the_median_round_and_its_spread() {
        let mut r = Rounds::default();
        for (s, x) in [
            ("a", 10.0),
            ("b", 1.0),
            ("a", 30.0),
            ("a", 20.0),
            ("b", 3.0),
        ] {
            r.push(s, x);
        }
        let got = r.medians(|x| *x);
        assert_eq!(got[0].system, "a");
        assert_eq!((got[0].sample, got[0].spread), (20.0, 100.0));
        assert_eq!(got[0].keys, [10.0, 30.0, 20.0], "round order");
        assert_eq!(got[0].rounds_note(), "rounds: 10.000 / 30.000 / 20.000");
        assert_eq!((got[1].system.as_str(), got[1].sample), ("b", 1.0));
        assert!((got[1].spread - 200.0).abs() < 1e-9);
    }
}
