//! Bucket lifecycle, the model: rules (as S3 takes them: a rule-level `Prefix` or a
//! `Filter` of prefix, tags and sizes), which versions a rule applies to, and when each
//! action is due. `s3/lifecycle.rs` speaks S3 with it (and answers
//! `x-amz-expiration`); `catalog/lifecycle.rs` is the worker GC runs every pass.
//!
//! Ages count in *lifecycle days*: a day is normally 24 hours, and can be made shorter
//! (`--lifecycle-day`) so that rules can be watched working in seconds, as RGW's
//! `rgw_lc_debug_interval` does. With real days, an expiration falls at the midnight
//! (UTC) after the age is reached, as S3 does; with shortened days, when it is reached.

use serde::{Deserialize, Serialize};

/// A bucket's lifecycle configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub rules: Vec<Rule>,
}

/// One rule, kept as given (GetBucketLifecycleConfiguration answers it back the same).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rule {
    pub id: String,
    pub enabled: bool,
    /// The rule-level `Prefix` of the older form of rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration: Option<Expiration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noncurrent: Option<NoncurrentExpiration>,
    /// AbortIncompleteMultipartUpload's DaysAfterInitiation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort_days: Option<i32>,
}

/// A `Filter`: a prefix, one tag, or (`and`) a prefix, tags and sizes all at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Filter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_gt: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_lt: Option<i64>,
    /// Given as `And` (answered back so).
    pub and: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Expiration {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days: Option<i32>,
    /// Midnight UTC, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired_object_delete_marker: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NoncurrentExpiration {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days: Option<i32>,
    /// Keep this many newer noncurrent versions whatever their age.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newer_versions: Option<i32>,
}

/// A real day, in ms.
pub const DAY_MS: i64 = 86_400_000;

impl Rule {
    /// The key prefix the rule applies to.
    pub fn key_prefix(&self) -> &str {
        self.prefix.as_deref().or(self.filter.as_ref().and_then(|f| f.prefix.as_deref())).unwrap_or("")
    }

    /// Whether the rule applies to an object version with `key`, `tags` and `size`.
    pub fn applies(&self, key: &str, tags: &[(String, String)], size: u64) -> bool {
        if !self.enabled || !key.starts_with(self.key_prefix()) {
            return false;
        }
        let Some(f) = &self.filter else { return true };
        let size = size as i64;
        f.tags.iter().all(|t| tags.contains(t))
            && f.size_gt.is_none_or(|g| size > g)
            && f.size_lt.is_none_or(|l| size < l)
    }

    /// Whether the rule applies to a delete marker of `key` (which has no tags or size:
    /// only prefix rules do).
    pub fn applies_to_marker(&self, key: &str) -> bool {
        let plain =
            self.filter.as_ref().is_none_or(|f| f.tags.is_empty() && f.size_gt.is_none() && f.size_lt.is_none());
        self.enabled && plain && key.starts_with(self.key_prefix())
    }

    /// When the current version, made at `modified_ms`, expires by this rule (days of
    /// `day_ms`).
    pub fn expires_at(&self, modified_ms: i64, day_ms: i64) -> Option<i64> {
        let e = self.expiration.as_ref()?;
        match (e.days, e.date_ms) {
            (Some(d), _) => Some(after_days(modified_ms, d, day_ms)),
            (None, Some(date)) => Some(date),
            _ => None,
        }
    }

    /// Whether a noncurrent version that became noncurrent at `since_ms`, with `newer`
    /// noncurrent versions newer than it, expires by this rule at `now_ms`.
    pub fn noncurrent_expired(&self, since_ms: i64, newer: usize, now_ms: i64, day_ms: i64) -> bool {
        let Some(n) = &self.noncurrent else { return false };
        if n.newer_versions.is_some_and(|keep| newer < keep.max(0) as usize) {
            return false;
        }
        match n.days {
            Some(d) => after_days(since_ms, d, day_ms) <= now_ms,
            // NewerNoncurrentVersions alone: every version past the newest N.
            None => n.newer_versions.is_some(),
        }
    }

    /// Whether an upload started at `created_ms` is to be aborted at `now_ms`.
    pub fn abort_due(&self, created_ms: i64, now_ms: i64, day_ms: i64) -> bool {
        self.abort_days.is_some_and(|d| after_days(created_ms, d, day_ms) <= now_ms)
    }
}

/// `days` lifecycle days after `from_ms`: with real days, the midnight UTC after (as S3
/// rounds), else exactly.
pub fn after_days(from_ms: i64, days: i32, day_ms: i64) -> i64 {
    let t = from_ms.saturating_add(i64::from(days).saturating_mul(day_ms));
    if day_ms == DAY_MS {
        // The next midnight (a time at midnight stays).
        t.div_euclid(DAY_MS) * DAY_MS + if t.rem_euclid(DAY_MS) == 0 { 0 } else { DAY_MS }
    } else {
        t
    }
}

impl Lifecycle {
    /// The rule that expires the current version (`key`, `tags`, `size`, made at
    /// `modified_ms`) first, and when: what `x-amz-expiration` says (in real days).
    pub fn expiry(&self, key: &str, tags: &[(String, String)], size: u64, modified_ms: i64) -> Option<(i64, &str)> {
        self.rules
            .iter()
            .filter(|r| r.applies(key, tags, size))
            .filter_map(|r| r.expires_at(modified_ms, DAY_MS).map(|at| (at, r.id.as_str())))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(prefix: &str) -> Rule {
        Rule { id: "r".into(), enabled: true, prefix: Some(prefix.into()), ..Default::default() }
    }

    #[test]
    fn real_days_end_at_the_next_midnight_shortened_days_exactly() {
        // 2024-01-01T10:00Z plus one day: 2024-01-03T00:00Z.
        let t = 1_704_103_200_000;
        assert_eq!(after_days(t, 1, DAY_MS), 1_704_240_000_000);
        // At midnight already: stays.
        assert_eq!(after_days(1_704_067_200_000, 1, DAY_MS), 1_704_153_600_000);
        assert_eq!(after_days(t, 3, 10_000), t + 30_000);
    }

    #[test]
    fn filters_match_prefix_tags_and_sizes() {
        let mut r = rule("logs/");
        assert!(r.applies("logs/a", &[], 0));
        assert!(!r.applies("other", &[], 0));
        r.prefix = None;
        r.filter = Some(Filter {
            prefix: Some("p/".into()),
            tags: vec![("k".into(), "v".into()), ("x".into(), "y".into())],
            size_gt: Some(10),
            size_lt: Some(100),
            and: true,
        });
        let tags = vec![("x".into(), "y".into()), ("k".into(), "v".into()), ("z".into(), "1".into())];
        assert!(r.applies("p/1", &tags, 50));
        assert!(!r.applies("p/1", &tags[..1], 50), "every tag must match");
        assert!(!r.applies("p/1", &tags, 10) && !r.applies("p/1", &tags, 100), "sizes are strict bounds");
        assert!(!r.applies_to_marker("p/1"), "markers have no tags");
        r.enabled = false;
        assert!(!r.applies("p/1", &tags, 50));
    }

    #[test]
    fn noncurrent_versions_expire_by_age_beyond_the_newest_kept() {
        let mut r = rule("");
        r.noncurrent = Some(NoncurrentExpiration { days: Some(2), newer_versions: Some(1) });
        let day = 1000;
        assert!(!r.noncurrent_expired(0, 0, 5_000, day), "the newest noncurrent version is kept");
        assert!(r.noncurrent_expired(0, 1, 2_000, day));
        assert!(!r.noncurrent_expired(0, 1, 1_999, day), "too young");
        r.noncurrent = Some(NoncurrentExpiration { days: None, newer_versions: Some(2) });
        assert!(!r.noncurrent_expired(0, 1, 0, day) && r.noncurrent_expired(0, 2, 0, day));
    }

    #[test]
    fn the_earliest_expiring_rule_names_the_expiry() {
        let mut a = rule("a");
        a.id = "long".into();
        a.expiration = Some(Expiration { days: Some(30), ..Default::default() });
        let mut b = rule("");
        b.id = "short".into();
        b.expiration = Some(Expiration { days: Some(1), ..Default::default() });
        let l = Lifecycle { rules: vec![a, b] };
        assert_eq!(l.expiry("a1", &[], 1, 0), Some((DAY_MS, "short")));
        let l = Lifecycle { rules: vec![l.rules[0].clone()] };
        assert_eq!(l.expiry("b", &[], 1, 0), None);
    }
}
