//! Access control lists: who besides the owner may do what with a bucket or an object.
//!
//! The owner of a bucket (its tenant) owns every object in it (as S3's default object
//! ownership, "bucket owner enforced", has it) and may do everything with both. An ACL
//! grants more: `READ` of a bucket lists it, `WRITE` of a bucket writes and deletes its
//! objects, `READ` of an object reads it, `READ_ACP`/`WRITE_ACP` read and replace the
//! ACL itself; `FULL_CONTROL` is all four. Grantees are tenants, everyone (`AllUsers`,
//! anonymous requests included) or every authenticated caller (`AuthenticatedUsers`).
//! A bucket's ACL is its `acl` configuration document; an object's is in its row's
//! `info`. None stored: private.

use serde::{Deserialize, Serialize};

pub const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
pub const AUTHENTICATED_USERS: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";
/// Grants per ACL at most (as AWS).
pub const GRANTS_MAX: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Perm {
    #[serde(rename = "READ")]
    Read,
    #[serde(rename = "WRITE")]
    Write,
    #[serde(rename = "READ_ACP")]
    ReadAcp,
    #[serde(rename = "WRITE_ACP")]
    WriteAcp,
    #[serde(rename = "FULL_CONTROL")]
    FullControl,
}

impl Perm {
    pub fn name(self) -> &'static str {
        match self {
            Perm::Read => "READ",
            Perm::Write => "WRITE",
            Perm::ReadAcp => "READ_ACP",
            Perm::WriteAcp => "WRITE_ACP",
            Perm::FullControl => "FULL_CONTROL",
        }
    }

    pub fn parse(s: &str) -> Option<Perm> {
        [Perm::Read, Perm::Write, Perm::ReadAcp, Perm::WriteAcp, Perm::FullControl].into_iter().find(|p| p.name() == s)
    }

    /// Whether holding `self` gives `wanted`.
    fn covers(self, wanted: Perm) -> bool {
        self == wanted || self == Perm::FullControl
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Who {
    /// A tenant (its canonical id is its name).
    #[serde(rename = "tenant")]
    Tenant(String),
    #[serde(rename = "all")]
    AllUsers,
    #[serde(rename = "authenticated")]
    AuthenticatedUsers,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub who: Who,
    pub perm: Perm,
}

/// The grants beyond the owner's (who always holds `FULL_CONTROL`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    pub grants: Vec<Grant>,
}

/// Who is asking: a tenant, or nobody (a request without credentials).
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    Anonymous,
    Tenant(&'a str),
}

impl Acl {
    /// A canned ACL by its S3 name, for a resource owned by `owner`.
    pub fn canned(name: &str) -> Option<Acl> {
        let g = |who, perm| Grant { who, perm };
        let grants = match name {
            // The bucket owner owns every object, so "bucket-owner-*" give nothing more;
            // services' groups (EC2 bundles, log delivery) are not here.
            "private" | "bucket-owner-read" | "bucket-owner-full-control" | "aws-exec-read" | "log-delivery-write" => {
                vec![]
            }
            "public-read" => vec![g(Who::AllUsers, Perm::Read)],
            "public-read-write" => vec![g(Who::AllUsers, Perm::Read), g(Who::AllUsers, Perm::Write)],
            "authenticated-read" => vec![g(Who::AuthenticatedUsers, Perm::Read)],
            _ => return None,
        };
        Some(Acl { grants })
    }

    /// Whether `caller`, who does not own the resource, holds `wanted` by this ACL.
    pub fn allows(&self, caller: Caller<'_>, wanted: Perm) -> bool {
        self.grants.iter().any(|g| {
            g.perm.covers(wanted)
                && match (&g.who, caller) {
                    (Who::AllUsers, _) => true,
                    (Who::AuthenticatedUsers, Caller::Tenant(_)) => true,
                    (Who::Tenant(t), Caller::Tenant(c)) => t == c,
                    _ => false,
                }
        })
    }

    /// Whether anyone without credentials may do something by this ACL.
    pub fn is_public(&self) -> bool {
        self.grants.iter().any(|g| matches!(g.who, Who::AllUsers | Who::AuthenticatedUsers))
    }
}

/// The grants of one `x-amz-grant-*` header (`id="tenant", uri="http://..."`) for `perm`.
pub fn parse_grant_header(value: &str, perm: Perm) -> Result<Vec<Grant>, String> {
    let mut out = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (kind, v) = part.split_once('=').ok_or_else(|| format!("grant {part:?} is not TYPE=\"VALUE\""))?;
        let v = v.trim().trim_matches('"');
        let who = match kind.trim().to_ascii_lowercase().as_str() {
            "id" => Who::Tenant(v.to_owned()),
            "uri" => group(v).ok_or_else(|| format!("unknown grantee group {v:?}"))?,
            "emailaddress" => return Err("grants by e-mail address are not supported".into()),
            k => return Err(format!("unknown grantee type {k:?}")),
        };
        out.push(Grant { who, perm });
    }
    Ok(out)
}

/// The group of a grantee URI.
pub fn group(uri: &str) -> Option<Who> {
    match uri {
        ALL_USERS => Some(Who::AllUsers),
        AUTHENTICATED_USERS => Some(Who::AuthenticatedUsers),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_reach_whom_they_name() {
        let public = Acl::canned("public-read").unwrap();
        assert!(public.allows(Caller::Anonymous, Perm::Read));
        assert!(public.allows(Caller::Tenant("t2"), Perm::Read));
        assert!(!public.allows(Caller::Anonymous, Perm::Write));
        assert!(!public.allows(Caller::Anonymous, Perm::ReadAcp));
        let auth = Acl::canned("authenticated-read").unwrap();
        assert!(auth.allows(Caller::Tenant("t2"), Perm::Read) && !auth.allows(Caller::Anonymous, Perm::Read));
        let one = Acl { grants: vec![Grant { who: Who::Tenant("t2".into()), perm: Perm::FullControl }] };
        assert!(one.allows(Caller::Tenant("t2"), Perm::WriteAcp) && !one.allows(Caller::Tenant("t3"), Perm::Read));
        let private = Acl::canned("private").unwrap();
        assert!(!private.allows(Caller::Tenant("t2"), Perm::Read) && !private.is_public());
        assert!(Acl::canned("no-such-acl").is_none());
    }

    #[test]
    fn grant_headers_parse() {
        let g = parse_grant_header(&format!("id=\"t2\", uri=\"{ALL_USERS}\""), Perm::Read).unwrap();
        assert_eq!(
            g,
            vec![
                Grant { who: Who::Tenant("t2".into()), perm: Perm::Read },
                Grant { who: Who::AllUsers, perm: Perm::Read }
            ]
        );
        assert!(parse_grant_header("emailAddress=\"a@b\"", Perm::Read).is_err());
        assert!(parse_grant_header("uri=\"http://other\"", Perm::Read).is_err());
    }
}
