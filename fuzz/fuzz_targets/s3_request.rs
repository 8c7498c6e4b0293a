//! The gateway's own checks of an S3 request's signing (`ogw/src/s3/stamp.rs`, the same
//! file) on arbitrary request lines and headers, and the XML bodies the gateway's
//! handlers take, parsed by s3s as a request would be. No panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../ogw/src/s3/stamp.rs"]
mod stamp;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let uri = lines.next().unwrap_or("/");
    let mut b = http::Request::builder().uri(uri);
    for l in lines.by_ref().take(8) {
        if let Some((k, v)) = l.split_once(':') {
            if let (Ok(k), Ok(v)) = (http::HeaderName::try_from(k.trim()), http::HeaderValue::try_from(v.trim())) {
                b = b.header(k, v);
            }
        }
    }
    if let Ok(req) = b.body(()) {
        let (mut parts, ()) = req.into_parts();
        stamp::date_for_sigv4(&mut parts);
        let _ = stamp::precheck(&parts, time::OffsetDateTime::now_utc());
    }
    // The XML bodies of DeleteObjects, CompleteMultipartUpload and CreateBucket.
    xml::<s3s::dto::Delete>(data);
    xml::<s3s::dto::CompletedMultipartUpload>(data);
    xml::<s3s::dto::CreateBucketConfiguration>(data);
});

/// As s3s reads a request's XML body.
fn xml<T: for<'x> s3s::xml::Deserialize<'x>>(data: &[u8]) {
    let mut d = s3s::xml::Deserializer::new(data);
    if T::deserialize(&mut d).is_ok() {
        let _ = d.expect_eof();
    }
}
