//! Progress of long admin work (repair, drain, rebalance, a GC pass, an audit): a bar
//! with what is done and left, the rate and an ETA. On a terminal one line on stderr is
//! redrawn; otherwise a plain line is written every few seconds and at the end, so
//! logs and scripts get progress too.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::status::bytes;

/// Plain lines (not a terminal) are at least this far apart.
const PLAIN_EVERY: Duration = Duration::from_secs(3);

/// What the figures count.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Unit {
    Bytes,
    /// Things, named (plural) as given: "copies", "rows".
    Count(&'static str),
}

impl Unit {
    fn show(self, v: f64) -> String {
        match self {
            Unit::Bytes => bytes(v.max(0.0) as u64),
            Unit::Count(what) => format!("{v:.0} {what}"),
        }
    }
}

pub fn duration(s: f64) -> String {
    let s = s.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// One progress line: label, bar, percent, what is left, rate, ETA.
pub fn line(label: &str, done: f64, left: f64, secs: f64, unit: Unit) -> String {
    let frac = if done + left > 0.0 { done / (done + left) } else { 1.0 };
    let filled = (frac * 30.0).round() as usize;
    let rate = if secs > 0.0 { done / secs } else { 0.0 };
    let eta = if left == 0.0 {
        "done".to_string()
    } else if rate > 0.0 {
        format!("ETA {}", duration(left / rate))
    } else {
        "ETA unknown".to_string()
    };
    format!(
        "{label} [{}{}] {:>3.0}%  {} left, {}/s, {eta}",
        "#".repeat(filled),
        "-".repeat(30 - filled),
        frac * 100.0,
        unit.show(left),
        unit.show(rate),
    )
}

/// A progress display on stderr.
pub struct Bar {
    label: String,
    unit: Unit,
    tty: bool,
    start: Instant,
    last_plain: Option<Instant>,
    drawn: bool,
}

impl Bar {
    pub fn new(label: impl Into<String>, unit: Unit) -> Bar {
        Bar {
            label: label.into(),
            unit,
            tty: std::io::stderr().is_terminal(),
            start: Instant::now(),
            last_plain: None,
            drawn: false,
        }
    }

    /// Shows `done` and `left` (and a note after the line); `finished` ends the line.
    pub fn show(&mut self, done: f64, left: f64, note: &str, finished: bool) {
        let text = format!("{}{note}", line(&self.label, done, left, self.start.elapsed().as_secs_f64(), self.unit));
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r{text:<110}");
            self.drawn = true;
            if finished {
                let _ = writeln!(err);
                self.drawn = false;
            }
        } else if finished || self.last_plain.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
            let _ = writeln!(err, "{text}");
            self.last_plain = Some(Instant::now());
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // An error ends the work early: what follows starts on its own line.
        if self.drawn {
            let _ = writeln!(std::io::stderr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_the_share_done_what_is_left_the_rate_and_an_eta() {
        let l = line("repair", 3.0 * 1048576.0, 1048576.0, 2.0, Unit::Bytes);
        assert!(l.starts_with("repair [#######################-------]  75%"), "{l}");
        assert!(l.contains("1.0 MiB left, 1.5 MiB/s, ETA 1s"), "{l}");
        let l = line("drain of datanode 4", 0.0, 10.0, 1.0, Unit::Count("copies"));
        assert!(l.contains("  0%") && l.contains("10 copies left") && l.contains("ETA unknown"), "{l}");
        assert!(line("x", 5.0, 0.0, 1.0, Unit::Count("copies")).contains("100%  0 copies left, 5 copies/s, done"));
        assert_eq!(duration(3725.0), "1h02m");
        assert_eq!(duration(75.0), "1m15s");
    }
}
