//! Bucket policies: IAM-style JSON documents (`Version`, `Statement` with `Effect`,
//! `Principal`/`NotPrincipal`, `Action`/`NotAction`, `Resource`/`NotResource`,
//! `Condition`), parsed and checked when set, evaluated on every request to the bucket
//! together with the owner's rights and ACLs (`s3/acl.rs`): an explicit `Deny` that
//! matches refuses the request, whoever asks; else the owner, an ACL grant or a
//! matching `Allow` lets it through.
//!
//! Principals are tenants (`"TENANT"`, `"arn:aws:iam::TENANT:root"` or any
//! `arn:aws:iam::TENANT:...`) or `*` (everyone, anonymous callers included). Actions
//! and resources take `*` and `?` wildcards. Conditions: the String, Numeric, Bool,
//! IpAddress and Null operators (with `IfExists`), over `aws:SourceIp`,
//! `aws:SecureTransport`, `aws:UserAgent`, `aws:Referer`, `aws:PrincipalAccount`,
//! `s3:prefix`, `s3:delimiter`, `s3:max-keys`, `s3:x-amz-acl`,
//! `s3:ExistingObjectTag/KEY` and `s3:RequestObjectTag/KEY`.

use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::Value;

use crate::acl::Caller;

/// A policy document's size limit (as AWS).
pub const POLICY_BYTES_MAX: usize = 20 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Principals {
    Any,
    Tenants(Vec<String>),
}

impl Principals {
    fn matches(&self, caller: Caller<'_>) -> bool {
        match (self, caller) {
            (Principals::Any, _) => true,
            (Principals::Tenants(ts), Caller::Tenant(t)) => ts.iter().any(|x| x == t),
            (Principals::Tenants(_), Caller::Anonymous) => false,
        }
    }
}

#[derive(Debug, Clone)]
struct Cond {
    op: String,
    if_exists: bool,
    key: String,
    values: Vec<String>,
}

#[derive(Debug, Clone)]
struct Statement {
    effect: Effect,
    principal: Option<Principals>,
    not_principal: Option<Principals>,
    actions: Option<Vec<String>>,
    not_actions: Option<Vec<String>>,
    resources: Option<Vec<String>>,
    not_resources: Option<Vec<String>>,
    conditions: Vec<Cond>,
}

/// A parsed bucket policy.
#[derive(Debug, Clone)]
pub struct Policy {
    statements: Vec<Statement>,
}

/// What a policy decides of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// No statement applies.
    Neither,
}

/// One request as a policy sees it.
pub struct Request<'a> {
    pub caller: Caller<'a>,
    /// `s3:GetObject`, ...
    pub action: &'a str,
    /// `arn:aws:s3:::bucket` or `arn:aws:s3:::bucket/key`.
    pub resource: String,
    /// Condition keys and their values (lower-cased keys).
    pub values: HashMap<String, Vec<String>>,
}

/// `*` (any run) and `?` (any one character) wildcards; case-sensitive.
fn wild(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn strings(v: &Value, what: &str) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                Value::Bool(b) => Ok(b.to_string()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(format!("{what} holds something that is not a string")),
            })
            .collect(),
        Value::Bool(b) => Ok(vec![b.to_string()]),
        Value::Number(n) => Ok(vec![n.to_string()]),
        _ => Err(format!("{what} must be a string or a list of strings")),
    }
}

fn principals(v: &Value) -> Result<Principals, String> {
    let list = match v {
        Value::String(s) if s == "*" => return Ok(Principals::Any),
        Value::Object(m) => {
            let mut out = Vec::new();
            for (k, v) in m {
                if k != "AWS" && k != "CanonicalUser" {
                    return Err(format!("unsupported principal type {k:?}"));
                }
                out.extend(strings(v, "Principal")?);
            }
            out
        }
        _ => return Err("Principal must be \"*\" or {\"AWS\": ...}".into()),
    };
    if list.iter().any(|p| p == "*") {
        return Ok(Principals::Any);
    }
    let tenants = list
        .iter()
        .map(|p| match p.strip_prefix("arn:aws:iam::") {
            Some(rest) => rest.split(':').next().filter(|t| !t.is_empty()).map(str::to_owned),
            None => Some(p.clone()),
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| "Invalid principal in policy".to_string())?;
    Ok(Principals::Tenants(tenants))
}

const OPS: [&str; 23] = [
    "StringEquals",
    "StringNotEquals",
    "StringEqualsIgnoreCase",
    "StringNotEqualsIgnoreCase",
    "StringLike",
    "StringNotLike",
    "NumericEquals",
    "NumericNotEquals",
    "NumericLessThan",
    "NumericLessThanEquals",
    "NumericGreaterThan",
    "NumericGreaterThanEquals",
    "Bool",
    "IpAddress",
    "NotIpAddress",
    "Null",
    "ArnEquals",
    "ArnLike",
    "ArnNotEquals",
    "ArnNotLike",
    "DateEquals",
    "DateLessThan",
    "DateGreaterThan",
];

impl Policy {
    /// Parses and checks a policy for `bucket`: every resource must be the bucket or
    /// objects in it (AWS's `MalformedPolicy` otherwise).
    pub fn parse(doc: &str, bucket: &str) -> Result<Policy, String> {
        if doc.len() > POLICY_BYTES_MAX {
            return Err(format!("a policy is at most {POLICY_BYTES_MAX} bytes"));
        }
        let v: Value = serde_json::from_str(doc).map_err(|e| format!("This policy is not valid JSON: {e}"))?;
        let Value::Object(top) = &v else { return Err("a policy is a JSON object".into()) };
        match top.get("Version").and_then(Value::as_str) {
            None | Some("2012-10-17") | Some("2008-10-17") => {}
            Some(v) => return Err(format!("unknown policy Version {v:?}")),
        }
        let stmts = match top.get("Statement") {
            Some(Value::Array(a)) => a.clone(),
            Some(o @ Value::Object(_)) => vec![o.clone()],
            _ => return Err("Missing required field Statement".into()),
        };
        if stmts.is_empty() {
            return Err("Missing required field Statement".into());
        }
        let mut statements = Vec::new();
        for s in &stmts {
            let Value::Object(m) = s else { return Err("a Statement is a JSON object".into()) };
            let effect = match m.get("Effect").and_then(Value::as_str) {
                Some("Allow") => Effect::Allow,
                Some("Deny") => Effect::Deny,
                _ => return Err("Missing required field Effect (Allow or Deny)".into()),
            };
            let principal = m.get("Principal").map(principals).transpose()?;
            let not_principal = m.get("NotPrincipal").map(principals).transpose()?;
            if principal.is_none() == not_principal.is_none() {
                return Err("Missing required field Principal".into());
            }
            let get = |k: &str| m.get(k).map(|v| strings(v, k)).transpose();
            let (actions, not_actions) = (get("Action")?, get("NotAction")?);
            if actions.is_none() == not_actions.is_none() {
                return Err("Missing required field Action".into());
            }
            for a in actions.iter().chain(&not_actions).flatten() {
                if a != "*" && !a.to_ascii_lowercase().starts_with("s3:") {
                    return Err(format!("Policy has invalid action {a:?}"));
                }
            }
            let (resources, not_resources) = (get("Resource")?, get("NotResource")?);
            if resources.is_none() == not_resources.is_none() {
                return Err("Missing required field Resource".into());
            }
            for r in resources.iter().chain(&not_resources).flatten() {
                let rest = r.strip_prefix("arn:aws:s3:::").ok_or_else(|| "Policy has invalid resource".to_string())?;
                let b = rest.split('/').next().unwrap_or_default();
                if !wild(b, bucket) {
                    return Err("Policy has invalid resource".into());
                }
            }
            let mut conditions = Vec::new();
            if let Some(c) = m.get("Condition") {
                let Value::Object(ops) = c else { return Err("Condition must be an object".into()) };
                for (op, kv) in ops {
                    let (base, if_exists) = match op.strip_suffix("IfExists") {
                        Some(b) => (b, true),
                        None => (op.as_str(), false),
                    };
                    let base = base
                        .strip_prefix("ForAnyValue:")
                        .or_else(|| base.strip_prefix("ForAllValues:"))
                        .unwrap_or(base);
                    if !OPS.contains(&base) {
                        return Err(format!("Policy has an invalid condition operator {op:?}"));
                    }
                    let Value::Object(kv) = kv else { return Err(format!("{op} must map keys to values")) };
                    for (k, v) in kv {
                        conditions.push(Cond {
                            op: base.to_owned(),
                            if_exists,
                            key: k.to_ascii_lowercase(),
                            values: strings(v, op)?,
                        });
                    }
                }
            }
            statements.push(Statement {
                effect,
                principal,
                not_principal,
                actions,
                not_actions,
                resources,
                not_resources,
                conditions,
            });
        }
        Ok(Policy { statements })
    }

    /// What the policy decides of `r`: `Deny` when a matching statement denies it,
    /// else `Allow` when one allows it.
    pub fn decide(&self, r: &Request<'_>) -> Decision {
        let mut allowed = false;
        for s in &self.statements {
            if !s.applies(r) {
                continue;
            }
            match s.effect {
                Effect::Deny => return Decision::Deny,
                Effect::Allow => allowed = true,
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::Neither
        }
    }

    /// Whether the policy lets everyone (or every authenticated caller) do something
    /// (GetBucketPolicyStatus's `IsPublic`): an `Allow` for principal `*` without
    /// conditions that narrow who may ask.
    pub fn is_public(&self) -> bool {
        self.statements.iter().any(|s| {
            s.effect == Effect::Allow
                && (s.principal == Some(Principals::Any) || s.not_principal.is_some())
                && !s.conditions.iter().any(|c| {
                    matches!(
                        c.key.as_str(),
                        "aws:sourceip" | "aws:sourcevpc" | "aws:sourcevpce" | "aws:principalaccount"
                    )
                })
        })
    }
}

impl Statement {
    fn applies(&self, r: &Request<'_>) -> bool {
        let who = match (&self.principal, &self.not_principal) {
            (Some(p), _) => p.matches(r.caller),
            (None, Some(np)) => !np.matches(r.caller),
            (None, None) => false,
        };
        let action =
            |list: &[String]| list.iter().any(|a| wild(&a.to_ascii_lowercase(), &r.action.to_ascii_lowercase()));
        let what = match (&self.actions, &self.not_actions) {
            (Some(a), _) => action(a),
            (None, Some(na)) => !action(na),
            (None, None) => false,
        };
        let resource = |list: &[String]| list.iter().any(|p| wild(p, &r.resource));
        let on = match (&self.resources, &self.not_resources) {
            (Some(x), _) => resource(x),
            (None, Some(nx)) => !resource(nx),
            (None, None) => false,
        };
        who && what && on && self.conditions.iter().all(|c| c.holds(r))
    }
}

impl Cond {
    fn holds(&self, r: &Request<'_>) -> bool {
        let Some(have) = r.values.get(&self.key).filter(|v| !v.is_empty()) else {
            return match self.op.as_str() {
                // Null: true means "the key is absent".
                "Null" => self.values.iter().any(|v| v == "true"),
                _ => self.if_exists,
            };
        };
        let any = |f: &dyn Fn(&str, &str) -> bool| have.iter().any(|h| self.values.iter().any(|v| f(h, v)));
        let num = |s: &str| s.parse::<f64>().ok();
        let cmp = |f: fn(f64, f64) -> bool| any(&|h, v| matches!((num(h), num(v)), (Some(a), Some(b)) if f(a, b)));
        match self.op.as_str() {
            "StringEquals" | "ArnEquals" | "DateEquals" => any(&|h, v| h == v),
            "StringNotEquals" | "ArnNotEquals" => !any(&|h, v| h == v),
            "StringEqualsIgnoreCase" => any(&|h, v| h.eq_ignore_ascii_case(v)),
            "StringNotEqualsIgnoreCase" => !any(&|h, v| h.eq_ignore_ascii_case(v)),
            "StringLike" | "ArnLike" => any(&|h, v| wild(v, h)),
            "StringNotLike" | "ArnNotLike" => !any(&|h, v| wild(v, h)),
            "NumericEquals" => cmp(|a, b| a == b),
            "NumericNotEquals" => !cmp(|a, b| a == b),
            "NumericLessThan" => cmp(|a, b| a < b),
            "NumericLessThanEquals" => cmp(|a, b| a <= b),
            "NumericGreaterThan" => cmp(|a, b| a > b),
            "NumericGreaterThanEquals" => cmp(|a, b| a >= b),
            "Bool" => any(&|h, v| h.eq_ignore_ascii_case(v)),
            "IpAddress" => any(&|h, v| in_cidr(h, v)),
            "NotIpAddress" => !any(&|h, v| in_cidr(h, v)),
            "Null" => self.values.iter().any(|v| v == "false"),
            // Dates are compared as ISO 8601 strings (which order as times).
            "DateLessThan" => any(&|h, v| h < v),
            "DateGreaterThan" => any(&|h, v| h > v),
            _ => false,
        }
    }
}

/// Whether the address `ip` lies in `cidr` (`10.0.0.0/8`, or a bare address).
fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (net, bits) = match cidr.split_once('/') {
        Some((n, b)) => (n, b.parse::<u32>().ok()),
        None => (cidr, None),
    };
    match (ip.parse::<IpAddr>(), net.parse::<IpAddr>()) {
        (Ok(IpAddr::V4(a)), Ok(IpAddr::V4(n))) => {
            let b = bits.unwrap_or(32).min(32);
            let mask = if b == 0 { 0 } else { u32::MAX << (32 - b) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (Ok(IpAddr::V6(a)), Ok(IpAddr::V6(n))) => {
            let b = bits.unwrap_or(128).min(128);
            let mask = if b == 0 { 0 } else { u128::MAX << (128 - b) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(caller: Caller<'a>, action: &'a str, resource: &str, values: &[(&str, &str)]) -> Request<'a> {
        Request {
            caller,
            action,
            resource: resource.into(),
            values: values.iter().map(|(k, v)| (k.to_string(), vec![v.to_string()])).collect(),
        }
    }

    #[test]
    fn wildcards() {
        assert!(wild("arn:aws:s3:::b/*", "arn:aws:s3:::b/x/y") && !wild("arn:aws:s3:::b/*", "arn:aws:s3:::bb"));
        assert!(wild("s3:Get*", "s3:GetObject") && wild("a?c", "abc") && !wild("a?c", "ac"));
        assert!(wild("*", "") && wild("public/*", "public/object") && !wild("public/*", "private/object"));
    }

    #[test]
    fn deny_wins_and_principals_and_conditions_narrow() {
        let doc = r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::t2:root"]},"Action":"s3:*","Resource":["arn:aws:s3:::b","arn:aws:s3:::b/*"]},
            {"Effect":"Allow","Principal":"*","Action":"s3:ListBucket","Resource":"arn:aws:s3:::b",
             "Condition":{"StringLike":{"s3:prefix":"public/*"}}},
            {"Effect":"Deny","Principal":"*","Action":"s3:DeleteObject","Resource":"arn:aws:s3:::b/keep/*"},
            {"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::b/*",
             "Condition":{"NotIpAddress":{"aws:SourceIp":["127.0.0.0/8","::1"]}}}]}"#;
        let p = Policy::parse(doc, "b").unwrap();
        let local = [("aws:sourceip", "127.0.0.1")];
        let t2 = Caller::Tenant("t2");
        assert_eq!(p.decide(&req(t2, "s3:GetObject", "arn:aws:s3:::b/x", &local)), Decision::Allow);
        assert_eq!(p.decide(&req(Caller::Tenant("t3"), "s3:GetObject", "arn:aws:s3:::b/x", &local)), Decision::Neither);
        assert_eq!(p.decide(&req(t2, "s3:DeleteObject", "arn:aws:s3:::b/keep/a", &local)), Decision::Deny);
        assert_eq!(
            p.decide(&req(t2, "s3:GetObject", "arn:aws:s3:::b/x", &[("aws:sourceip", "10.1.2.3")])),
            Decision::Deny
        );
        let public = [("s3:prefix", "public/a")];
        assert_eq!(p.decide(&req(Caller::Anonymous, "s3:ListBucket", "arn:aws:s3:::b", &public)), Decision::Allow);
        let private = [("s3:prefix", "private/")];
        assert_eq!(p.decide(&req(Caller::Anonymous, "s3:ListBucket", "arn:aws:s3:::b", &private)), Decision::Neither);
        assert!(p.is_public());
    }

    #[test]
    fn bad_policies_are_refused() {
        let bad = [
            "not json",
            r#"{"Statement":[]}"#,
            r#"{"Statement":[{"Effect":"Maybe","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::b"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::other/*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"ec2:*","Resource":"arn:aws:s3:::b"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::b","Condition":{"Sometimes":{"a":"b"}}}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::b"}]}"#,
        ];
        for b in bad {
            assert!(Policy::parse(b, "b").is_err(), "{b}");
        }
        assert!(in_cidr("10.1.2.3", "10.0.0.0/8") && !in_cidr("11.0.0.1", "10.0.0.0/8") && in_cidr("::1", "::1/128"));
    }
}
