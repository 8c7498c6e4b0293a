//! CORS: a bucket's rules (its `cors` configuration document), the answer to a browser's
//! preflight `OPTIONS` (answered here, before s3s, without authentication, as S3 does),
//! and the `Access-Control-*` headers added to an actual request's answer when its
//! `Origin` and method match a rule. Rules are read through a short-lived cache, which
//! the gateway's own Put/DeleteBucketCors clear.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, ConfigCache, ConfigKind};

pub const RULES_MAX: usize = 100;
pub const METHODS: [&str; 5] = ["GET", "PUT", "HEAD", "POST", "DELETE"];

/// One CORS rule, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub origins: Vec<String>,
    pub methods: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<i32>,
}

/// Whether `value` matches `pattern`, which holds at most one `*` (any characters).
fn wildcard(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((pre, suf)) => value.len() >= pre.len() + suf.len() && value.starts_with(pre) && value.ends_with(suf),
    }
}

impl Rule {
    /// The first rule of `rules` that allows `origin` to use `method` sending
    /// `headers` (lower-cased names).
    fn find<'a>(rules: &'a [Rule], origin: &str, method: &str, headers: &[String]) -> Option<&'a Rule> {
        rules.iter().find(|r| {
            r.origins.iter().any(|o| wildcard(o, origin))
                && r.methods.iter().any(|m| m == method)
                && headers.iter().all(|h| r.headers.iter().any(|p| wildcard(&p.to_ascii_lowercase(), h)))
        })
    }

    /// The `Access-Control-*` headers this rule gives `origin`.
    fn allow(&self, origin: &str, requested_headers: &[String], h: &mut HeaderMap) {
        let any = self.origins.iter().any(|o| o == "*");
        let mut set = |k: &'static str, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        };
        set("access-control-allow-origin", if any { "*".into() } else { origin.to_owned() });
        set("access-control-allow-methods", self.methods.join(", "));
        if !any {
            set("access-control-allow-credentials", "true".into());
        }
        if !requested_headers.is_empty() {
            set("access-control-allow-headers", requested_headers.join(", "));
        }
        if !self.expose.is_empty() {
            set("access-control-expose-headers", self.expose.join(", "));
        }
        if let Some(a) = self.max_age {
            set("access-control-max-age", a.to_string());
        }
        set("vary", "Origin, Access-Control-Request-Headers, Access-Control-Request-Method".into());
    }
}

/// Checks rules as PutBucketCors must: each with origins and methods S3 knows, at most
/// one `*` in an origin or header pattern, at most [`RULES_MAX`].
pub fn validate(rules: &[Rule]) -> Result<(), String> {
    if rules.is_empty() || rules.len() > RULES_MAX {
        return Err(format!("a CORS configuration has 1 to {RULES_MAX} rules"));
    }
    for r in rules {
        if r.origins.is_empty() || r.methods.is_empty() {
            return Err("each CORS rule needs an AllowedOrigin and an AllowedMethod".into());
        }
        if let Some(m) = r.methods.iter().find(|m| !METHODS.contains(&m.as_str())) {
            return Err(format!("Found unsupported HTTP method in CORS config. Unsupported method is {m}"));
        }
        for p in r.origins.iter().chain(&r.headers) {
            if p.matches('*').count() > 1 {
                return Err(format!("{p:?} holds more than one wildcard"));
            }
        }
        if r.max_age.is_some_and(|a| a < 0) {
            return Err("MaxAgeSeconds must not be negative".into());
        }
    }
    Ok(())
}

/// The rules of every bucket, read through a cache.
pub struct Cors {
    catalog: Catalog,
    /// Base domains of virtual-host style requests (`bucket.DOMAIN`).
    domains: Vec<String>,
    rules: ConfigCache<Vec<Rule>>,
}

impl Cors {
    pub fn new(catalog: Catalog, domains: Vec<String>) -> Cors {
        let rules = ConfigCache::new(ConfigKind::Cors, |doc, _| serde_json::from_str(doc).ok());
        Cors { catalog, domains, rules }
    }

    /// Forgets what is cached of `bucket` (its rules changed here).
    pub fn forget(&self, bucket: &str) {
        self.rules.forget(bucket);
    }

    /// The rules of `bucket` (`None`: none, no such bucket, or unreadable now: a
    /// cross-origin request is then not allowed).
    async fn rules(&self, bucket: &str) -> Option<Arc<Vec<Rule>>> {
        self.rules.get(&self.catalog, bucket).await.unwrap_or_else(|e| {
            tracing::warn!("CORS rules of {bucket}: {e}");
            None
        })
    }

    /// The bucket a request names: by virtual host, else the path's first segment.
    fn bucket_of(&self, parts: &http::request::Parts) -> Option<String> {
        if let Some(host) = parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()) {
            let name = host
                .rsplit_once(':')
                .map_or(host, |(h, p)| if p.bytes().all(|b| b.is_ascii_digit()) { h } else { host });
            let name = name.to_ascii_lowercase();
            for d in &self.domains {
                if let Some(b) = name.strip_suffix(d.as_str()).and_then(|b| b.strip_suffix('.')) {
                    if !b.is_empty() {
                        return Some(b.to_owned());
                    }
                }
            }
        }
        let first = parts.uri.path().trim_start_matches('/').split('/').next()?;
        let b = percent_decode(first)?;
        (!b.is_empty()).then_some(b)
    }

    /// The answer to a preflight `OPTIONS` request.
    pub async fn preflight(
        &self,
        parts: &http::request::Parts,
    ) -> (StatusCode, HeaderMap, Option<(&'static str, &'static str)>) {
        let header = |k: &str| parts.headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (Some(origin), Some(method)) = (header("origin"), header("access-control-request-method")) else {
            return (
                StatusCode::BAD_REQUEST,
                HeaderMap::new(),
                Some(("BadRequest", "Insufficient information. Origin request header needed.")),
            );
        };
        let requested = requested_headers(header("access-control-request-headers").as_deref());
        let denied = || {
            (
                StatusCode::FORBIDDEN,
                HeaderMap::new(),
                Some(("AccessForbidden", "CORSResponse: This CORS request is not allowed.")),
            )
        };
        let Some(bucket) = self.bucket_of(parts) else { return denied() };
        let Some(rules) = self.rules(&bucket).await else { return denied() };
        match Rule::find(&rules, &origin, &method, &requested) {
            Some(r) => {
                let mut h = HeaderMap::new();
                r.allow(&origin, &requested, &mut h);
                (StatusCode::OK, h, None)
            }
            None => denied(),
        }
    }

    /// Adds the `Access-Control-*` headers to the answer of an actual request that
    /// carries an `Origin` its bucket's rules allow (for the method it names in
    /// `Access-Control-Request-Method`, else its own).
    pub async fn decorate(&self, req: &CorsRequest, resp: &mut HeaderMap) {
        let Some(rules) = self.rules(&req.bucket).await else { return };
        if let Some(r) = Rule::find(&rules, &req.origin, &req.method, &[]) {
            r.allow(&req.origin, &[], resp);
        }
    }

    /// What of a request `decorate` needs, when it has an `Origin` and names a bucket.
    pub fn request(&self, parts: &http::request::Parts) -> Option<CorsRequest> {
        let origin = parts.headers.get("origin")?.to_str().ok()?.to_owned();
        let method = match parts.headers.get("access-control-request-method").and_then(|v| v.to_str().ok()) {
            Some(m) => m.to_owned(),
            None => parts.method.as_str().to_owned(),
        };
        Some(CorsRequest { bucket: self.bucket_of(parts)?, origin, method })
    }
}

pub struct CorsRequest {
    bucket: String,
    origin: String,
    method: String,
}

/// Whether a request is a CORS preflight (answered by [`Cors::preflight`]).
pub fn is_preflight(parts: &http::request::Parts) -> bool {
    parts.method == Method::OPTIONS
}

fn requested_headers(h: Option<&str>) -> Vec<String> {
    h.map(|h| h.split(',').map(|x| x.trim().to_ascii_lowercase()).filter(|x| !x.is_empty()).collect())
        .unwrap_or_default()
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_with_one_wildcard() {
        assert!(wildcard("*suffix", "foo.suffix") && wildcard("*suffix", "suffix"));
        assert!(!wildcard("*suffix", "foo.suffix.get"));
        assert!(wildcard("start*end", "startend") && wildcard("start*end", "start12end"));
        assert!(!wildcard("start*end", "0start12end") && !wildcard("start*end", "startenx"));
        assert!(wildcard("prefix*", "prefix.suffix") && !wildcard("prefix*", "bla.prefix"));
        assert!(wildcard("*", "anything") && wildcard("exact", "exact") && !wildcard("exact", "exactly"));
        // A pattern longer than the value never matches by overlap.
        assert!(!wildcard("ab*ba", "aba"));
    }

    #[test]
    fn a_rule_needs_origin_method_and_every_header() {
        let r = Rule {
            origins: vec!["https://*.example.com".into()],
            methods: vec!["GET".into(), "PUT".into()],
            headers: vec!["x-amz-*".into(), "Content-Type".into()],
            ..Default::default()
        };
        let rules = [r];
        let ok = |o: &str, m: &str, h: &[&str]| {
            Rule::find(&rules, o, m, &h.iter().map(|s| s.to_string()).collect::<Vec<_>>()).is_some()
        };
        assert!(ok("https://a.example.com", "PUT", &["x-amz-date", "content-type"]));
        assert!(!ok("https://a.example.com", "DELETE", &[]));
        assert!(!ok("http://a.example.com", "GET", &[]));
        assert!(!ok("https://a.example.com", "GET", &["authorization"]));
        assert!(validate(&rules).is_ok());
        let two = Rule { origins: vec!["*.*".into()], methods: vec!["GET".into()], ..Default::default() };
        assert!(validate(&[two]).is_err());
        let bad = Rule { origins: vec!["*".into()], methods: vec!["PATCH".into()], ..Default::default() };
        assert!(validate(&[bad]).unwrap_err().contains("PATCH"));
    }
}
