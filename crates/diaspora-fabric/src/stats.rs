//! Medians over rounds, for every benchmark's report (the fabric's, the
//! peers', the pools', the WAN's, the Kafka bridge's). Pure.

/// Median, least and most of one measure over the rounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Spread {
    /// Median (of an even count: the mean of the middle two).
    pub median: f64,
    /// Least.
    pub min: f64,
    /// Most.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; NaNs are left out, and no values give zeros.
    ///
    /// ```
    /// use diaspora_fabric::stats::Spread;
    /// let s = Spread::of([3.0, 1.0, 2.0]);
    /// assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
    /// ```
    pub fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Spread {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }

    /// `median (min–max)` with `decimals` decimals; just the median when
    /// all three are equal (one round).
    pub fn text(&self, decimals: usize) -> String {
        if self.min == self.max {
            format!("{:.*}", decimals, self.median)
        } else {
            format!(
                "{:.*} ({:.*}–{:.*})",
                decimals, self.median, decimals, self.min, decimals, self.max
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Spread;

    #[test]
    fn median_min_max() {
        assert_eq!(
            Spread::of([5.0, 1.0, 3.0]),
            Spread {
                median: 3.0,
                min: 1.0,
                max: 5.0
            }
        );
        assert_eq!(Spread::of([4.0, 1.0, 2.0, 10.0]).median, 3.0);
        assert_eq!(Spread::of([7.0]).median, 7.0);
        assert_eq!(Spread::of([]), Spread::default());
        assert_eq!(Spread::of([f64::NAN, 2.0]).median, 2.0);
        assert_eq!(Spread::of([f64::NAN]), Spread::default());
    }

    #[test]
    fn text_shows_the_range_only_when_there_is_one() {
        assert_eq!(Spread::of([2.0]).text(1), "2.0");
        assert_eq!(Spread::of([1.0, 2.0, 4.0]).text(0), "2 (1–4)");
    }
}
