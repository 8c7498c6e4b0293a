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
use serde::{Deserialize, Serialize};

/// A storage class this gateway offers; stored and sent by its S3 name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum StorageClass {
    Standard,
    ReducedRedundancy,
    StandardIa,
    OnezoneIa,
    IntelligentTiering,
    GlacierIr,
}

impl StorageClass {
    pub const ALL: [StorageClass; 6] = [
        StorageClass::Standard,
        StorageClass::ReducedRedundancy,
        StorageClass::StandardIa,
        StorageClass::OnezoneIa,
        StorageClass::IntelligentTiering,
        StorageClass::GlacierIr,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StorageClass::Standard => "STANDARD",
            StorageClass::ReducedRedundancy => "REDUCED_REDUNDANCY",
            StorageClass::StandardIa => "STANDARD_IA",
            StorageClass::OnezoneIa => "ONEZONE_IA",
            StorageClass::IntelligentTiering => "INTELLIGENT_TIERING",
            StorageClass::GlacierIr => "GLACIER_IR",
        }
    }

    /// The class named `name` (S3's names are upper case), if offered here.
    pub fn from_name(name: &str) -> Option<StorageClass> {
        StorageClass::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Whether objects of this class are written with the erasure-coded policy.
    fn infrequent(self) -> bool {
        !matches!(self, StorageClass::Standard | StorageClass::ReducedRedundancy)
    }
}

impl TryFrom<String> for StorageClass {
    type Error = String;
    fn try_from(s: String) -> Result<StorageClass, String> {
        StorageClass::from_name(&s).ok_or_else(|| format!("unknown storage class {s}"))
    }
}

impl From<StorageClass> for &'static str {
    fn from(c: StorageClass) -> &'static str {
        c.name()
    }
}

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
    pub fn resolve(&self, requested: Option<&str>, bucket_policy: Policy) -> S3Result<(StorageClass, Policy)> {
        match requested {
            Some(name) => {
                let class = StorageClass::from_name(name).ok_or_else(|| {
                    s3_error!(
                        InvalidStorageClass,
                        "storage class {name:?} is not offered here: use STANDARD, or STANDARD_IA, ONEZONE_IA, \
                         INTELLIGENT_TIERING or GLACIER_IR (erasure-coded)"
                    )
                })?;
                Ok((class, self.policy_of(class)))
            }
            None => Ok((class_of(bucket_policy), bucket_policy)),
        }
    }

    /// The policy a class is written with.
    pub fn policy_of(&self, class: StorageClass) -> Policy {
        if class.infrequent() {
            self.infrequent
        } else {
            self.standard
        }
    }
}

/// The class an object written with `p` reports when none was asked for.
pub fn class_of(p: Policy) -> StorageClass {
    match p {
        Policy::Replica { .. } => StorageClass::Standard,
        Policy::Ec { .. } => StorageClass::StandardIa,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_map_to_policies_and_unknown_ones_are_refused() {
        let c = Classes { standard: Policy::Replica { n: 3 }, infrequent: Policy::Ec { k: 4, m: 2 } };
        let (ec42, replica3) = (Policy::Ec { k: 4, m: 2 }, Policy::Replica { n: 3 });
        assert_eq!(c.resolve(Some("STANDARD"), ec42).unwrap(), (StorageClass::Standard, c.standard));
        assert_eq!(c.resolve(Some("GLACIER_IR"), replica3).unwrap(), (StorageClass::GlacierIr, c.infrequent));
        assert_eq!(
            c.resolve(None, Policy::Ec { k: 6, m: 3 }).unwrap(),
            (StorageClass::StandardIa, Policy::Ec { k: 6, m: 3 })
        );
        assert_eq!(
            c.resolve(None, Policy::Replica { n: 2 }).unwrap(),
            (StorageClass::Standard, Policy::Replica { n: 2 })
        );
        for bad in ["GLACIER", "DEEP_ARCHIVE", "standard", "NOPE"] {
            let e = c.resolve(Some(bad), replica3).unwrap_err();
            assert_eq!(e.code(), &s3s::S3ErrorCode::InvalidStorageClass, "{bad}");
        }
    }

    #[test]
    fn classes_are_stored_by_their_s3_names() {
        for class in StorageClass::ALL {
            let json = serde_json::to_string(&class).unwrap();
            assert_eq!(json, format!("\"{}\"", class.name()));
            assert_eq!(serde_json::from_str::<StorageClass>(&json).unwrap(), class);
        }
        assert!(serde_json::from_str::<StorageClass>("\"GLACIER\"").is_err());
    }
}
