//! Storage classes and the redundancy policies they map to (issue 6).
//!
//! `STANDARD` (and `REDUCED_REDUNDANCY`) objects are written with the gateway's
//! standard policy (`--policy`, `replica:3` by default); the infrequent-access classes
//! (`STANDARD_IA`, `ONEZONE_IA`, `INTELLIGENT_TIERING`, `GLACIER_IR`) with its
//! erasure-coded one (`--ec-policy`, `ec:4+2` by default). Classes that S3 serves only
//! after a restore (`GLACIER`, `DEEP_ARCHIVE`) and unknown names are refused with
//! `InvalidStorageClass`. An object PUT without a class gets its bucket's default policy
//! (set with `ogw bucket-policy`), and reports `STANDARD` for a replicated one,
//! `STANDARD_IA` for an erasure-coded one.

use proto::meta::Policy;
use s3s::{s3_error, S3Result};

/// Classes written with the erasure-coded policy.
const INFREQUENT: &[&str] = &["STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR"];
/// Classes written with the standard policy.
const STANDARD: &[&str] = &["STANDARD", "REDUCED_REDUNDANCY"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classes {
    /// Policy of `STANDARD` objects.
    pub standard: Policy,
    /// Policy of the infrequent-access classes.
    pub infrequent: Policy,
}

impl Classes {
    /// The class and policy of a new object: the class asked for, or the bucket's
    /// default policy (`bucket_policy`) and the class that names it.
    pub fn resolve(&self, requested: Option<&str>, bucket_policy: &str) -> S3Result<(String, Policy)> {
        match requested {
            Some(c) => Ok((c.to_string(), self.policy_of(c)?)),
            None => {
                let p: Policy = bucket_policy.parse().unwrap_or(self.standard);
                Ok((class_of(p).to_string(), p))
            }
        }
    }

    /// The policy a class is written with.
    pub fn policy_of(&self, class: &str) -> S3Result<Policy> {
        if STANDARD.contains(&class) {
            Ok(self.standard)
        } else if INFREQUENT.contains(&class) {
            Ok(self.infrequent)
        } else {
            Err(s3_error!(
                InvalidStorageClass,
                "storage class {class:?} is not offered here: use STANDARD, or STANDARD_IA, ONEZONE_IA, \
                 INTELLIGENT_TIERING or GLACIER_IR (erasure-coded)"
            ))
        }
    }
}

/// The class an object written with `p` reports when none was asked for.
pub fn class_of(p: Policy) -> &'static str {
    match p {
        Policy::Replica { .. } => "STANDARD",
        Policy::Ec { .. } => "STANDARD_IA",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_map_to_policies_and_unknown_ones_are_refused() {
        let c = Classes { standard: Policy::Replica { n: 3 }, infrequent: Policy::Ec { k: 4, m: 2 } };
        assert_eq!(c.resolve(Some("STANDARD"), "ec:4+2").unwrap(), ("STANDARD".into(), c.standard));
        assert_eq!(c.resolve(Some("GLACIER_IR"), "replica:3").unwrap(), ("GLACIER_IR".into(), c.infrequent));
        assert_eq!(c.resolve(None, "ec:6+3").unwrap(), ("STANDARD_IA".into(), Policy::Ec { k: 6, m: 3 }));
        assert_eq!(c.resolve(None, "replica:2").unwrap(), ("STANDARD".into(), Policy::Replica { n: 2 }));
        for bad in ["GLACIER", "DEEP_ARCHIVE", "standard", "NOPE"] {
            let e = c.resolve(Some(bad), "replica:3").unwrap_err();
            assert_eq!(e.code(), &s3s::S3ErrorCode::InvalidStorageClass, "{bad}");
        }
    }
}
