//! Samples summarised as median, min and max: these machines are noisy, so
//! every figure is a distribution, and comparisons are ratios of medians
//! measured in the same run.

use std::time::Duration;

/// Durations of repeated runs, in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    /// Adds one duration.
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1000.0);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The median (0 when empty).
    #[must_use]
    pub fn median(&self) -> f64 {
        let v = self.sorted();
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    /// The smallest.
    #[must_use]
    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(0.0)
    }

    /// The largest.
    #[must_use]
    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(0.0)
    }

    /// `median (min–max)` in ms.
    #[must_use]
    pub fn show(&self) -> String {
        format!("{:.2} ms ({:.2}–{:.2}, n={})", self.median(), self.min(), self.max(), self.0.len())
    }

    /// As JSON.
    #[must_use]
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"median_ms": self.median(), "min_ms": self.min(), "max_ms": self.max(), "n": self.0.len()})
    }

    /// From JSON written by [`Samples::json`] or a list of ms.
    #[must_use]
    pub fn from_list(values: &serde_json::Value) -> Self {
        Self(values.as_array().map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect()).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::Samples;

    #[test]
    fn median_min_max() {
        let s = Samples(vec![3.0, 1.0, 2.0, 10.0]);
        assert!((s.median() - 2.5).abs() < 1e-9);
        assert!((s.min() - 1.0).abs() < 1e-9 && (s.max() - 10.0).abs() < 1e-9);
        assert!(Samples::default().median().abs() < 1e-9);
    }
}
