//! Ratios measured interleaved (A B A B …), reported as the median of the pair ratios with min and max,
//! and the machine's load average around each run.

/// The median, min and max of per-pair ratios.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PairedRatio {
    /// The median of the pair ratios (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest pair ratio.
    pub min: f64,
    /// The largest pair ratio.
    pub max: f64,
    /// Every pair's ratio, in run order.
    pub pairs: Vec<f64>,
}

impl PairedRatio {
    /// From the ratios of each pair; `None` when there is none (finite values only).
    ///
    /// ```
    /// let r = entra_load::PairedRatio::of([0.9, 1.1, 1.0]).unwrap();
    /// assert_eq!((r.median, r.min, r.max), (1.0, 0.9, 1.1));
    /// ```
    pub fn of(ratios: impl IntoIterator<Item = f64>) -> Option<Self> {
        let pairs: Vec<f64> = ratios.into_iter().filter(|r| r.is_finite()).collect();
        if pairs.is_empty() {
            return None;
        }
        let mut sorted = pairs.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(PairedRatio {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            pairs,
        })
    }

    /// The ratios `a / b` of pairs `(a, b)`, skipping pairs whose `b` is not positive.
    pub fn of_pairs(pairs: impl IntoIterator<Item = (f64, f64)>) -> Option<Self> {
        Self::of(pairs.into_iter().filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b))
    }

    /// `0.967 (0.951–0.982, 3 pairs)`.
    pub fn display(&self) -> String {
        format!(
            "{:.3} ({:.3}–{:.3}, {} pairs)",
            self.median,
            self.min,
            self.max,
            self.pairs.len()
        )
    }

    /// As JSON: `{"median", "min", "max", "pairs"}`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "median": self.median, "min": self.min, "max": self.max, "pairs": self.pairs,
        })
    }
}

/// The 1, 5 and 15 minute load averages (Linux's `/proc/loadavg`), `None` elsewhere.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let r = PairedRatio::of_pairs([(2.0, 4.0), (3.0, 4.0), (4.0, 4.0), (1.0, 4.0)]).unwrap();
        assert_eq!(r.median, 0.625);
        assert_eq!((r.min, r.max), (0.25, 1.0));
        assert_eq!(r.pairs, [0.5, 0.75, 1.0, 0.25]);
        assert!(PairedRatio::of_pairs([(1.0, 0.0)]).is_none());
    }
}
