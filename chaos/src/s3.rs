//! A small S3 client for the workload: requests signed with SigV4 (UNSIGNED-PAYLOAD),
//! sent to one of the gateways, each with a deadline. What it returns says whether the
//! server answered, and how; a request with no answer has an unknown outcome.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use bytes::Bytes;

pub struct S3 {
    http: reqwest::Client,
    pub endpoints: Vec<String>,
    access: String,
    secret: String,
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Bytes,
}

impl S3 {
    pub fn new(endpoints: Vec<String>, access: String, secret: String, timeout: Duration) -> S3 {
        proto::tls::install_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        S3 { http, endpoints, access, secret }
    }

    /// `METHOD path?query` to gateway `gw`, with `extra` headers signed along. `Err`: no
    /// answer (connection refused or reset, or the deadline passed).
    pub async fn send(
        &self,
        gw: usize,
        method: &str,
        path_query: &str,
        extra: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer, String> {
        let url = format!("{}{}", self.endpoints[gw], path_query);
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let identity = Credentials::new(&self.access, &self.secret, None, None, "chaos").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let host = url.split('/').nth(2).unwrap_or_default().to_string();
        let headers: Vec<(&str, &str)> =
            std::iter::once(("host", host.as_str())).chain(extra.iter().copied()).collect();
        let signable = SignableRequest::new(method, &url, headers.iter().copied(), SignableBody::UnsignedPayload)
            .map_err(|e| e.to_string())?;
        let (instructions, _) = sign(signable, &params).map_err(|e| e.to_string())?.into_parts();
        let mut req = self.http.request(method.parse().map_err(|_| "method")?, &url).body(body);
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        for (k, v) in instructions.headers() {
            req = req.header(k, v);
        }
        let resp = req.send().await.map_err(|e| format!("{method} {url}: {e}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| format!("{method} {url}: body: {e}"))?;
        Ok(Answer { status, headers, body })
    }
}

/// The text of the first `<tag>` in an XML body.
pub fn xml_text(body: &[u8], tag: &str) -> Option<String> {
    let s = std::str::from_utf8(body).ok()?;
    let open = format!("<{tag}>");
    let i = s.find(&open)? + open.len();
    let j = s[i..].find(&format!("</{tag}>"))? + i;
    Some(s[i..j].to_string())
}
