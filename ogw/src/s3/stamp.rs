//! What every request and response gets around the S3 service: a request id (the
//! `x-amz-request-id` header, and `RequestId` in every error body, as AWS sends), and the
//! checks of request signing that AWS makes and s3s does not (`precheck`): presigned
//! URLs live at most 7 days, and SigV2 header-signed requests carry a date within 15
//! minutes of the gateway's clock (so that a captured request cannot be replayed later).

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

/// Longest `X-Amz-Expires` of a SigV4 presigned URL (AWS: 7 days).
pub const PRESIGNED_EXPIRES_SECS_MAX: u64 = 7 * 24 * 3600;
/// Largest difference between a SigV2 request's date and the gateway's clock (AWS: 15 min).
pub const SIGV2_SKEW_SECS_MAX: i64 = 15 * 60;

tokio::task_local! {
    /// The id of the request this task serves (set around the S3 service's call), for
    /// the log lines of errors whose details the client is not told.
    pub static REQUEST_ID: String;
}

/// The id of the request being served, if any (for logs).
pub fn current() -> String {
    REQUEST_ID.try_with(|id| id.clone()).unwrap_or_else(|_| "-".into())
}

/// A fresh request id: 16 upper-case hex digits, as AWS's.
pub fn request_id() -> String {
    let v: u64 = rand::random();
    format!("{v:016X}")
}

/// A refusal made before the request reaches the S3 service.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// AWS's checks of how a request is signed that the S3 service does not make.
pub fn precheck(parts: &http::request::Parts, now: time::OffsetDateTime) -> Option<Refusal> {
    let query = parts.uri.query().unwrap_or("");
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "X-Amz-Expires" {
            let ok = v.parse::<u64>().is_ok_and(|s| s <= PRESIGNED_EXPIRES_SECS_MAX);
            if !ok {
                return Some(Refusal {
                    status: StatusCode::BAD_REQUEST,
                    code: "AuthorizationQueryParametersError",
                    message: format!(
                        "X-Amz-Expires must be less than a week (in seconds) that is; {PRESIGNED_EXPIRES_SECS_MAX}"
                    ),
                });
            }
        }
    }
    // SigV2 in a header: `Authorization: AWS ACCESS:SIGNATURE`.
    let sigv2 = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.strip_prefix("AWS ").is_some_and(|rest| rest.contains(':')));
    if sigv2 {
        let date = parts
            .headers
            .get("x-amz-date")
            .or_else(|| parts.headers.get(http::header::DATE))
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        let Some(date) = date else {
            return Some(Refusal {
                status: StatusCode::FORBIDDEN,
                code: "AccessDenied",
                message: "AWS authentication requires a valid Date or x-amz-date header".into(),
            });
        };
        if (now - date).whole_seconds().abs() > SIGV2_SKEW_SECS_MAX {
            return Some(Refusal {
                status: StatusCode::FORBIDDEN,
                code: "RequestTimeTooSkewed",
                message: "The difference between the request time and the current time is too large.".into(),
            });
        }
    }
    None
}

/// A SigV4 request may carry its time in `Date` instead of `x-amz-date` (AWS takes
/// either; s3s reads only `x-amz-date`): the time is copied there, in SigV4's format.
/// Only signed headers enter the signature, so adding this one changes nothing else.
pub fn date_for_sigv4(parts: &mut http::request::Parts) {
    let v4 = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256 "));
    if !v4 || parts.headers.contains_key("x-amz-date") {
        return;
    }
    let date = parts.headers.get(http::header::DATE).and_then(|v| v.to_str().ok()).and_then(parse_http_date);
    if let Some(t) = date {
        let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
        if let Some(v) =
            t.to_offset(time::UtcOffset::UTC).format(&fmt).ok().and_then(|f| HeaderValue::from_str(&f).ok())
        {
            parts.headers.insert("x-amz-date", v);
        }
    }
}

/// An HTTP date (RFC 7231 IMF-fixdate, as SigV2 clients send; RFC 850 and asctime are
/// accepted too), or an ISO 8601 basic date-time (`20261202T031900Z`).
fn parse_http_date(s: &str) -> Option<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc2822;
    let s = s.trim();
    if let Ok(t) = time::OffsetDateTime::parse(&s.replace("GMT", "+0000"), &Rfc2822) {
        return Some(t);
    }
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::PrimitiveDateTime::parse(s, &fmt).ok().map(|t| t.assume_utc())
}

/// The XML error body of a refusal made here.
pub fn error_body(code: &str, message: &str, request_id: &str) -> Bytes {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    Bytes::from(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{}</Message>\
         <RequestId>{request_id}</RequestId></Error>",
        esc(message)
    ))
}

/// Stamps a response with its request id: the header, and the error body's `RequestId`.
pub fn stamp(resp: &mut http::Response<s3s::Body>, request_id: &str) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-amz-request-id", v.clone());
        resp.headers_mut().insert("x-amz-id-2", v);
    }
    if resp.status().as_u16() < 400 {
        return;
    }
    let Some(body) = resp.body_mut().take_bytes() else { return };
    let text = String::from_utf8_lossy(&body);
    let stamped = match text.rfind("</Error>") {
        Some(at) if !text.contains("<RequestId>") => {
            format!("{}<RequestId>{request_id}</RequestId>{}", &text[..at], &text[at..])
        }
        _ => {
            *resp.body_mut() = s3s::Body::from(body);
            return;
        }
    };
    resp.headers_mut().insert(http::header::CONTENT_LENGTH, HeaderValue::from(stamped.len()));
    *resp.body_mut() = s3s::Body::from(Bytes::from(stamped));
}

/// Whether a request is a GetObjectAttributes (`GET ...?attributes`), whose answer
/// carries its ETag unquoted (`unquote_etag`).
pub fn is_get_attributes(parts: &http::request::Parts) -> bool {
    parts.method == http::Method::GET
        && parts.uri.query().is_some_and(|q| q.split('&').any(|p| p == "attributes" || p.starts_with("attributes=")))
}

/// AWS answers GetObjectAttributes with the ETag unquoted (unlike every other answer);
/// s3s quotes it: the quotes are taken off the answer's `<ETag>` element.
pub fn unquote_etag(resp: &mut http::Response<s3s::Body>) {
    if resp.status() != http::StatusCode::OK {
        return;
    }
    let Some(body) = resp.body_mut().take_bytes() else { return };
    let text = String::from_utf8_lossy(&body);
    let fixed = match (text.find("<ETag>\""), text.find("\"</ETag>")) {
        (Some(a), Some(b)) if a < b => format!("{}<ETag>{}</ETag>{}", &text[..a], &text[a + 7..b], &text[b + 8..]),
        _ => {
            *resp.body_mut() = s3s::Body::from(body);
            return;
        }
    };
    resp.headers_mut().insert(http::header::CONTENT_LENGTH, HeaderValue::from(fixed.len()));
    *resp.body_mut() = s3s::Body::from(Bytes::from(fixed));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn presigned_urls_live_at_most_a_week_and_sigv2_dates_must_be_current() {
        let now = time::OffsetDateTime::now_utc();
        assert_eq!(precheck(&parts("/b/k?X-Amz-Expires=604800&X-Amz-Signature=x", &[]), now), None);
        let r = precheck(&parts("/b/k?X-Amz-Expires=604801", &[]), now).unwrap();
        assert_eq!((r.status.as_u16(), r.code), (400, "AuthorizationQueryParametersError"));
        assert!(precheck(&parts("/b/k?X-Amz-Expires=4294967295", &[]), now).is_some());
        let date = |t: time::OffsetDateTime| {
            t.format(&time::macros::format_description!(
                "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
            ))
            .unwrap()
        };
        let auth = ("authorization", "AWS AKID:c2lnbmF0dXJl");
        assert_eq!(precheck(&parts("/b/k", &[auth, ("date", &date(now))]), now), None);
        let old = now - time::Duration::minutes(16);
        let r = precheck(&parts("/b/k", &[auth, ("date", &date(old))]), now).unwrap();
        assert_eq!((r.status.as_u16(), r.code), (403, "RequestTimeTooSkewed"));
        let r = precheck(&parts("/b/k", &[auth, ("x-amz-date", &date(now + time::Duration::hours(1)))]), now);
        assert_eq!(r.unwrap().code, "RequestTimeTooSkewed");
        assert_eq!(precheck(&parts("/b/k", &[auth]), now).unwrap().code, "AccessDenied");
        // SigV4 headers are s3s's to check.
        let v4 = ("authorization", "AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=host, Signature=c");
        assert_eq!(precheck(&parts("/b/k", &[v4]), now), None);
    }

    #[test]
    fn error_bodies_carry_the_request_id() {
        let mut r = http::Response::builder()
            .status(404)
            .body(s3s::Body::from(Bytes::from_static(b"<Error><Code>NoSuchKey</Code></Error>")))
            .unwrap();
        stamp(&mut r, "ABC");
        assert_eq!(r.headers()["x-amz-request-id"], "ABC");
        let body = r.body_mut().take_bytes().unwrap();
        assert_eq!(&body[..], b"<Error><Code>NoSuchKey</Code><RequestId>ABC</RequestId></Error>");
        assert_eq!(r.headers()["content-length"], body.len().to_string().as_str());
    }
}
