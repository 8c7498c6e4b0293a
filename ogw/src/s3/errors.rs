//! Every error the gateway answers with, mapped to its S3 code and HTTP status in one
//! place: the catalog's and the data path's errors convert with `?`; the answers whose
//! code or status s3s does not supply (304, 416, `InvalidPart` for a part number,
//! `XAmzContentSHA256Mismatch`) are made here.

use s3s::{s3_error, S3Error, S3ErrorCode};

use crate::catalog::CatalogError;
use crate::checksum::Algo;
use crate::data::PutError;

impl From<CatalogError> for S3Error {
    fn from(e: CatalogError) -> S3Error {
        match e {
            CatalogError::NoSuchBucket => s3_error!(NoSuchBucket),
            CatalogError::NotOwner => s3_error!(AccessDenied, "the bucket belongs to another account"),
            CatalogError::BucketExists { owned_by_you: true } => s3_error!(BucketAlreadyOwnedByYou),
            CatalogError::BucketExists { owned_by_you: false } => s3_error!(BucketAlreadyExists),
            CatalogError::BucketNotEmpty => s3_error!(BucketNotEmpty),
            CatalogError::NoSuchUpload => s3_error!(NoSuchUpload),
            CatalogError::PreconditionFailed => s3_error!(PreconditionFailed),
            CatalogError::NoSuchKey => s3_error!(NoSuchKey),
            CatalogError::WrongOffset => {
                let mut e = S3Error::with_message(
                    S3ErrorCode::Custom("InvalidWriteOffset".into()),
                    "The write offset value that you specified does not match the current object size.",
                );
                e.set_status_code(http::StatusCode::BAD_REQUEST);
                e
            }
            CatalogError::Invalid(m) => S3Error::with_message(S3ErrorCode::InvalidArgument, m),
            CatalogError::Locked(m) => S3Error::with_message(S3ErrorCode::AccessDenied, m),
            // SDKs retry a 503; the retry writes the bytes anew (or, for a copy, finds
            // the source gone).
            e @ CatalogError::Doomed(_) => S3Error::with_message(
                S3ErrorCode::ServiceUnavailable,
                format!("the request raced the reclaiming of deleted data ({e}); retry it"),
            ),
            e @ (CatalogError::Db(_) | CatalogError::Other(_)) => internal(e),
        }
    }
}

impl From<PutError> for S3Error {
    fn from(e: PutError) -> S3Error {
        match e {
            PutError::TooLarge => s3_error!(EntityTooLarge),
            PutError::Length => s3_error!(IncompleteBody, "the body is shorter or longer than Content-Length"),
            PutError::Body(m) => BodyError::of(m).into(),
            // The cluster has fewer datanodes than the class's policy is wide.
            PutError::Stream(client::StreamError::Meta(e @ proto::meta::MetaError::NotEnoughNodes { .. })) => {
                S3Error::with_message(
                    S3ErrorCode::InvalidStorageClass,
                    format!("this cluster cannot store the class: {e}"),
                )
            }
            // As Ceph RGW answers ENOSPC (MinIO: 507 `XMinioStorageFull`, "delete a few
            // objects to proceed"): a 5xx that clients do not retry at once, and a message
            // saying what brings space back.
            PutError::Stream(client::StreamError::NoSpace(why)) => {
                tracing::warn!("the cluster is out of space: {why}");
                let mut e = S3Error::with_message(
                    S3ErrorCode::Custom("InsufficientCapacity".into()),
                    "the storage cluster is out of space; space comes back as deleted and overwritten data \
                     is reclaimed, so retry later or delete objects",
                );
                e.set_status_code(http::StatusCode::INSUFFICIENT_STORAGE);
                e
            }
            PutError::Stream(e) => {
                tracing::error!("request {}: writing object data: {e}", super::stamp::current());
                S3Error::with_message(S3ErrorCode::ServiceUnavailable, "the data cannot be stored now; retry later")
            }
        }
    }
}

/// Why a request body could not be read to its end.
enum BodyError {
    /// The body is not the one whose SHA256 was signed (`x-amz-content-sha256`).
    ContentSha256Mismatch,
    /// An aws-chunked chunk's signature does not match.
    ChunkSignatureMismatch,
    /// The aws-chunked framing is broken or beyond s3s's limits.
    MalformedChunks(String),
    /// The body ended early, or the connection failed.
    Cut(String),
}

impl BodyError {
    /// s3s's body errors are private types (`UploadStreamError`,
    /// `AwsChunkedStreamError`); the variant's name in the message is all there is to
    /// tell them apart by, and this is the one place that reads it.
    fn of(message: String) -> BodyError {
        let has = |s: &str| message.contains(s);
        if has("Sha256Mismatch") {
            BodyError::ContentSha256Mismatch
        } else if has("SignatureMismatch") {
            BodyError::ChunkSignatureMismatch
        } else if has("FormatError") || has("TooLarge") || has("TooMany") {
            BodyError::MalformedChunks(message)
        } else {
            BodyError::Cut(message)
        }
    }
}

impl From<BodyError> for S3Error {
    fn from(e: BodyError) -> S3Error {
        match e {
            BodyError::ContentSha256Mismatch => with_status(
                S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into()),
                "the body does not match the x-amz-content-sha256 it was signed with",
                http::StatusCode::BAD_REQUEST,
            ),
            BodyError::ChunkSignatureMismatch => {
                S3Error::with_message(S3ErrorCode::SignatureDoesNotMatch, "a chunk signature does not match")
            }
            BodyError::MalformedChunks(m) => {
                S3Error::with_message(S3ErrorCode::InvalidRequest, format!("malformed aws-chunked body: {m}"))
            }
            BodyError::Cut(m) => S3Error::with_message(S3ErrorCode::IncompleteBody, m),
        }
    }
}

fn with_status(code: S3ErrorCode, message: &'static str, status: http::StatusCode) -> S3Error {
    let mut e = S3Error::with_message(code, message);
    e.set_status_code(status);
    e
}

/// A fault of the gateway or what it stands on (logged with the request id; the client
/// sees 500 and no detail: SQL text and cluster addresses stay in the log).
pub(super) fn internal(e: impl std::fmt::Display) -> S3Error {
    tracing::error!("request {}: internal error: {e}", super::stamp::current());
    S3Error::with_message(S3ErrorCode::InternalError, "We encountered an internal error. Please try again.")
}

/// 304: a read's `If-None-Match` or `If-Modified-Since` says the client has the object
/// of ETag `etag` (the answer carries it, as RFC 9110 asks and S3 does).
pub(super) fn not_modified(etag: &str) -> S3Error {
    let mut e = s3_error!(NotModified);
    e.set_status_code(http::StatusCode::NOT_MODIFIED);
    if let Ok(v) = http::HeaderValue::from_str(&format!("\"{etag}\"")) {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::ETAG, v);
        e.set_headers(h);
    }
    e
}

/// 416: a Range outside the object.
pub(super) fn invalid_range() -> S3Error {
    let mut e = s3_error!(InvalidRange);
    e.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
    e
}

/// 416: a `partNumber` the object does not have.
pub(super) fn invalid_part_number() -> S3Error {
    // AWS answers a part number the object does not have with 400 InvalidPart.
    with_status(
        S3ErrorCode::InvalidPart,
        "The requested part number is not in the object",
        http::StatusCode::BAD_REQUEST,
    )
}

/// A checksum the client gave does not match the one computed.
pub(super) fn bad_digest(a: Algo) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::BadDigest,
        format!("the {} you specified did not match the calculated checksum", a.name()),
    )
}

/// 503: an object's first bytes cannot be read now (no response header sent yet).
pub(super) fn unreadable(e: impl std::fmt::Display) -> S3Error {
    tracing::error!("request {}: reading object data: {e}", super::stamp::current());
    S3Error::with_message(S3ErrorCode::ServiceUnavailable, "the object's data cannot be read now; retry later")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full cluster is a 507 that says so, not the 503 of a passing failure.
    #[test]
    fn no_space_is_insufficient_capacity() {
        let e = S3Error::from(PutError::Stream(client::StreamError::NoSpace("no room".into())));
        assert_eq!(e.code(), &S3ErrorCode::Custom("InsufficientCapacity".into()));
        assert_eq!(e.status_code(), Some(http::StatusCode::INSUFFICIENT_STORAGE));
        assert!(e.message().is_some_and(|m| m.contains("out of space")), "{:?}", e.message());
    }
}
