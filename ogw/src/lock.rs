//! Object Lock, the model: a version's retention (a mode and a date until which it
//! cannot be deleted) and legal hold, a bucket's lock configuration (enabled, and the
//! default retention of new versions), and the rules that decide whether a version
//! may go or its retention may change. `s3/lock.rs` speaks S3 with it; the catalog
//! applies `may_delete` inside the transaction that deletes a version, so a lock set
//! concurrently is never missed.

use serde::{Deserialize, Serialize};

/// How strictly a retention holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Holds, except for a caller allowed to bypass it who asks to
    /// (`x-amz-bypass-governance-retention: true`).
    #[serde(rename = "GOVERNANCE")]
    Governance,
    /// Holds for everyone until its date; it can only be lengthened.
    #[serde(rename = "COMPLIANCE")]
    Compliance,
}

impl Mode {
    /// The S3 name; the names are case-sensitive.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "GOVERNANCE" => Some(Mode::Governance),
            "COMPLIANCE" => Some(Mode::Compliance),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Governance => "GOVERNANCE",
            Mode::Compliance => "COMPLIANCE",
        }
    }
}

/// A version's retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub mode: Mode,
    /// Unix ms.
    pub until_ms: i64,
}

/// How long a bucket's new versions are retained by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Period {
    Days(i32),
    Years(i32),
}

/// A bucket's Object Lock configuration (stored once the bucket has Object Lock, which
/// is for good).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockConfig {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub default: Option<(Mode, Period)>,
}

const DAY_MS: i64 = 86_400_000;

impl LockConfig {
    /// The retention a version made at `now_ms` gets when its request names none.
    pub fn default_retention(&self, now_ms: i64) -> Option<Retention> {
        let (mode, period) = self.default?;
        let days = match period {
            Period::Days(d) => i64::from(d),
            // As AWS: a year is 365 days.
            Period::Years(y) => i64::from(y) * 365,
        };
        Some(Retention { mode, until_ms: now_ms.saturating_add(days.saturating_mul(DAY_MS)) })
    }
}

/// Why a lock refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the object version is under a legal hold")]
    LegalHold,
    #[error("the object version is retained in {0} mode until its retain-until date")]
    Retained(&'static str),
    #[error("a COMPLIANCE retention can only be lengthened")]
    Compliance,
    #[error("shortening, removing or weakening a GOVERNANCE retention needs x-amz-bypass-governance-retention")]
    Governance,
}

/// Whether a version with `retention` and `legal_hold` may be deleted at `now_ms`
/// (`bypass`: the caller asked to bypass GOVERNANCE retention and may).
pub fn may_delete(retention: Option<&Retention>, legal_hold: bool, bypass: bool, now_ms: i64) -> Result<(), Refused> {
    if legal_hold {
        return Err(Refused::LegalHold);
    }
    match retention {
        Some(r) if r.until_ms > now_ms => match r.mode {
            Mode::Compliance => Err(Refused::Retained("COMPLIANCE")),
            Mode::Governance if bypass => Ok(()),
            Mode::Governance => Err(Refused::Retained("GOVERNANCE")),
        },
        _ => Ok(()),
    }
}

/// Whether a version's retention `old` may become `new` at `now_ms`: a retention in
/// force may be lengthened in the same mode; a COMPLIANCE one nothing else, a
/// GOVERNANCE one anything else only with `bypass`.
pub fn may_change(old: Option<&Retention>, new: Option<&Retention>, bypass: bool, now_ms: i64) -> Result<(), Refused> {
    let Some(old) = old.filter(|o| o.until_ms > now_ms) else { return Ok(()) };
    let lengthens = new.is_some_and(|n| n.mode == old.mode && n.until_ms >= old.until_ms);
    match old.mode {
        _ if lengthens => Ok(()),
        Mode::Compliance => Err(Refused::Compliance),
        Mode::Governance if bypass => Ok(()),
        Mode::Governance => Err(Refused::Governance),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn r(mode: Mode, until_ms: i64) -> Retention {
        Retention { mode, until_ms }
    }

    #[test]
    fn a_version_goes_only_when_no_hold_or_retention_in_force_keeps_it() {
        assert_eq!(may_delete(None, false, false, NOW), Ok(()));
        assert_eq!(may_delete(None, true, true, NOW), Err(Refused::LegalHold));
        let gov = r(Mode::Governance, NOW + 1);
        assert_eq!(may_delete(Some(&gov), false, false, NOW), Err(Refused::Retained("GOVERNANCE")));
        assert_eq!(may_delete(Some(&gov), false, true, NOW), Ok(()));
        let comp = r(Mode::Compliance, NOW + 1);
        assert_eq!(may_delete(Some(&comp), false, true, NOW), Err(Refused::Retained("COMPLIANCE")));
        // Past its date, a retention holds nothing.
        assert_eq!(may_delete(Some(&r(Mode::Compliance, NOW)), false, false, NOW), Ok(()));
    }

    #[test]
    fn retention_in_force_only_lengthens_unless_governance_is_bypassed() {
        let gov = r(Mode::Governance, NOW + 10);
        let comp = r(Mode::Compliance, NOW + 10);
        assert_eq!(may_change(Some(&gov), Some(&r(Mode::Governance, NOW + 20)), false, NOW), Ok(()));
        assert_eq!(may_change(Some(&gov), Some(&r(Mode::Governance, NOW + 5)), false, NOW), Err(Refused::Governance));
        assert_eq!(may_change(Some(&gov), Some(&r(Mode::Governance, NOW + 5)), true, NOW), Ok(()));
        assert_eq!(may_change(Some(&gov), Some(&comp), false, NOW), Err(Refused::Governance));
        assert_eq!(may_change(Some(&gov), Some(&comp), true, NOW), Ok(()));
        assert_eq!(may_change(Some(&gov), None, false, NOW), Err(Refused::Governance));
        assert_eq!(may_change(Some(&comp), Some(&gov), true, NOW), Err(Refused::Compliance));
        assert_eq!(may_change(Some(&comp), Some(&r(Mode::Compliance, NOW + 5)), true, NOW), Err(Refused::Compliance));
        assert_eq!(may_change(Some(&comp), Some(&r(Mode::Compliance, NOW + 11)), false, NOW), Ok(()));
        // An expired retention is no retention.
        assert_eq!(may_change(Some(&r(Mode::Compliance, NOW - 1)), None, false, NOW), Ok(()));
    }

    #[test]
    fn default_retention_counts_days_and_years_of_365_days() {
        let c = LockConfig { default: Some((Mode::Governance, Period::Days(2))) };
        assert_eq!(c.default_retention(NOW), Some(r(Mode::Governance, NOW + 2 * DAY_MS)));
        let c = LockConfig { default: Some((Mode::Compliance, Period::Years(1))) };
        assert_eq!(c.default_retention(NOW), Some(r(Mode::Compliance, NOW + 365 * DAY_MS)));
        assert_eq!(LockConfig::default().default_retention(NOW), None);
    }
}
