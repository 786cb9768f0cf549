//! How the benchmarks judge a goal of issue 4: each round's number, their
//! median and range, and whether the median meets the goal, printed so that
//! the number shown agrees with the verdict beside it.

/// The median of per-round numbers, and their range.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of `rounds`, which must not be empty.
    pub fn of(mut rounds: Vec<f64>) -> Spread {
        rounds.sort_by(f64::total_cmp);
        Spread {
            median: rounds[rounds.len() / 2],
            min: rounds[0],
            max: rounds[rounds.len() - 1],
        }
    }
}

/// A goal from issue 4, for a number where more is better or less is.
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    /// A ratio, at least this.
    AtLeast(f64),
    /// A time in microseconds, at most this.
    AtMost(f64),
}

/// The most decimals [`Goal::show`] gives a number to keep it from reading
/// as meeting a goal it misses (or missing one it meets).
const MOST_DECIMALS: usize = 6;

impl Goal {
    pub fn met_by(self, value: f64) -> bool {
        match self {
            Goal::AtLeast(goal) => value >= goal,
            Goal::AtMost(goal) => value <= goal,
        }
    }

    /// A ratio (at least) or a time in microseconds (at most), as printed:
    /// two decimals for a ratio and none for a time, or as many more as it
    /// takes for the number shown to meet the goal exactly when the number
    /// does. A median of 0.996 printed "1.00x" beside "goal >= 1.00x: NOT
    /// met".
    pub fn show(self, value: f64) -> String {
        let (fewest, unit) = match self {
            Goal::AtLeast(_) => (2, "x"),
            Goal::AtMost(_) => (0, "us"),
        };
        let shown = |decimals: usize| format!("{value:.decimals$}");
        let agrees = |text: &str| {
            text.parse::<f64>()
                .is_ok_and(|read| self.met_by(read) == self.met_by(value))
        };
        let text = (fewest..=MOST_DECIMALS)
            .map(shown)
            .find(|text| agrees(text))
            .unwrap_or_else(|| shown(MOST_DECIMALS));
        format!("{text}{unit}")
    }

    /// The median of the rounds' values, their range, and how many rounds
    /// met the goal, as a line.
    pub fn report(self, what: &str, rounds: Vec<f64>) -> String {
        let met = rounds.iter().filter(|&&v| self.met_by(v)).count();
        let count = rounds.len();
        let spread = Spread::of(rounds);
        let goal = match self {
            Goal::AtLeast(goal) => format!(">= {}", self.show(goal)),
            Goal::AtMost(goal) => format!("<= {}", self.show(goal)),
        };
        let verdict = if self.met_by(spread.median) {
            "met"
        } else {
            "NOT met"
        };
        format!(
            "{what}: median {} (rounds {} to {}); goal {goal}: {verdict}, in {met} of {count} rounds",
            self.show(spread.median),
            self.show(spread.min),
            self.show(spread.max),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The number shown beside a verdict never reads as the other verdict:
    /// a median just under a goal gets the decimals that show it under.
    #[test]
    fn a_median_shown_agrees_with_its_verdict() {
        let line = Goal::AtLeast(1.0).report("ours / theirs", vec![0.97, 0.996, 1.04]);
        assert_eq!(
            line,
            "ours / theirs: median 0.996x (rounds 0.97x to 1.04x); goal >= 1.00x: NOT met, \
             in 1 of 3 rounds"
        );
        let line = Goal::AtMost(120.0).report("added", vec![120.4, 90.0, 130.0]);
        assert_eq!(
            line,
            "added: median 120.4us (rounds 90us to 130us); goal <= 120us: NOT met, in 1 of 3 rounds"
        );
        // Rounded up to the goal where the number meets it: as few decimals
        // as ever.
        assert_eq!(Goal::AtLeast(1.0).show(1.004), "1.00x");
        assert_eq!(Goal::AtMost(120.0).show(119.6), "120us");
        assert_eq!(Goal::AtLeast(0.5).show(0.4999), "0.4999x");
        // Past six decimals, six: a difference that small is noise.
        assert_eq!(Goal::AtLeast(1.0).show(0.99999999), "1.000000x");
    }
}
