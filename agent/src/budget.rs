//! Run budgets: `50gpuh`, `90m`, `2h`, `3600s`, `200trials`.
//!
//! A time budget counts device seconds: the time trials spend on their device (training, or the
//! time a table lookup records) plus the time spent scoring proxies. It is a hard limit: before
//! each step the loop asks [`Budget::affords`] with the step's estimated cost and stops cleanly
//! when the step would not fit; the report states what was used and by how much a step overran
//! its estimate.

use std::fmt;
use std::str::FromStr;

/// What a run may spend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// Device seconds (CPU counts as one device).
    Seconds(f64),
    /// Evaluated architectures.
    Trials(usize),
}

impl FromStr for Limit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("bad budget '{s}': expected a number and a unit, e.g. 50gpuh, 90m, 2h, 3600s, 200trials"))?;
        if !(value.is_finite() && value > 0.0) {
            return Err(format!("bad budget '{s}': it must be positive"));
        }
        Ok(match unit.trim() {
            "gpuh" | "h" | "hours" | "hour" | "gpu-h" => Limit::Seconds(value * 3600.0),
            "m" | "min" | "minutes" => Limit::Seconds(value * 60.0),
            "s" | "sec" | "seconds" => Limit::Seconds(value),
            "trials" | "trial" | "t" => {
                if value.fract() != 0.0 {
                    return Err(format!("bad budget '{s}': trials must be a whole number"));
                }
                Limit::Trials(value as usize)
            }
            other => return Err(format!("bad budget '{s}': unknown unit '{other}' (use gpuh, h, m, s or trials)")),
        })
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Seconds(s) if *s >= 3600.0 => write!(f, "{:.2} device-hours", s / 3600.0),
            Limit::Seconds(s) => write!(f, "{s:.0} device-seconds"),
            Limit::Trials(n) => write!(f, "{n} trials"),
        }
    }
}

/// A budget being spent.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// The limit.
    pub limit: Limit,
    /// Device seconds spent so far.
    pub seconds: f64,
    /// Trials evaluated so far.
    pub trials: usize,
    /// The largest amount by which a step's actual cost exceeded the budget left when it started
    /// (seconds; 0 when no step overran).
    pub overrun_seconds: f64,
    /// Device seconds of a time budget held back from the search (for the final model) until
    /// [`Budget::release`].
    pub reserved: f64,
}

impl Budget {
    /// A fresh budget.
    pub fn new(limit: Limit) -> Self {
        Budget {
            limit,
            seconds: 0.0,
            trials: 0,
            overrun_seconds: 0.0,
            reserved: 0.0,
        }
    }

    /// Hold back `fraction` of a time budget (a trial budget holds back nothing).
    pub fn reserve(&mut self, fraction: f64) {
        if let Limit::Seconds(limit) = self.limit {
            self.reserved = limit * fraction.clamp(0.0, 1.0);
        }
    }

    /// Give the reserve back (the search is over).
    pub fn release(&mut self) {
        self.reserved = 0.0;
    }

    /// The limit the steps are held to now: a time limit less the reserve.
    fn available(&self, limit: f64) -> f64 {
        limit - self.reserved
    }

    /// Whether a step of `trials` evaluations costing an estimated `seconds` fits in what is left.
    pub fn affords(&self, trials: usize, seconds: f64) -> bool {
        match self.limit {
            Limit::Seconds(limit) => self.seconds + seconds <= self.available(limit),
            Limit::Trials(limit) => self.trials + trials <= limit,
        }
    }

    /// Trials still allowed (`usize::MAX` for a time budget).
    pub fn trials_left(&self) -> usize {
        match self.limit {
            Limit::Trials(limit) => limit.saturating_sub(self.trials),
            Limit::Seconds(_) => usize::MAX,
        }
    }

    /// Device seconds left of a time budget (`None` for a trial budget).
    pub fn seconds_left(&self) -> Option<f64> {
        match self.limit {
            Limit::Seconds(limit) => Some((self.available(limit) - self.seconds).max(0.0)),
            Limit::Trials(_) => None,
        }
    }

    /// Book a finished step.
    pub fn spend(&mut self, trials: usize, seconds: f64) {
        if let Limit::Seconds(limit) = self.limit {
            // Measured against the whole limit: a step that runs into the reserve is no overrun.
            let over = self.seconds + seconds - limit;
            if over > self.overrun_seconds {
                self.overrun_seconds = over;
            }
        }
        self.seconds += seconds;
        self.trials += trials;
    }

    /// Share of the limit used (may exceed 1 after an overrun).
    pub fn used_fraction(&self) -> f64 {
        match self.limit {
            Limit::Seconds(limit) => self.seconds / limit,
            Limit::Trials(limit) => self.trials as f64 / limit as f64,
        }
    }

    /// Whether nothing more can be spent.
    pub fn exhausted(&self) -> bool {
        match self.limit {
            Limit::Seconds(limit) => self.seconds >= self.available(limit),
            Limit::Trials(limit) => self.trials >= limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!("50gpuh".parse::<Limit>().unwrap(), Limit::Seconds(180_000.0));
        assert_eq!("90m".parse::<Limit>().unwrap(), Limit::Seconds(5400.0));
        assert_eq!("2h".parse::<Limit>().unwrap(), Limit::Seconds(7200.0));
        assert_eq!("0.5h".parse::<Limit>().unwrap(), Limit::Seconds(1800.0));
        assert_eq!("3600s".parse::<Limit>().unwrap(), Limit::Seconds(3600.0));
        assert_eq!("200trials".parse::<Limit>().unwrap(), Limit::Trials(200));
        for bad in ["", "gpuh", "-3h", "0m", "5 parsecs", "2.5trials", "h5"] {
            assert!(bad.parse::<Limit>().is_err(), "{bad}");
        }
    }

    #[test]
    fn spending_and_overrun() {
        let mut b = Budget::new(Limit::Seconds(100.0));
        assert!(b.affords(1, 60.0));
        b.spend(1, 60.0);
        assert!(!b.affords(1, 60.0));
        assert!(b.affords(1, 40.0));
        b.spend(1, 45.0);
        assert!(b.exhausted());
        assert!((b.overrun_seconds - 5.0).abs() < 1e-9);
        let mut t = Budget::new(Limit::Trials(3));
        t.spend(2, 0.0);
        assert_eq!(t.trials_left(), 1);
        assert!(!t.affords(2, 0.0));
    }
}
