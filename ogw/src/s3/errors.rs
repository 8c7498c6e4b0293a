//! Every error the gateway answers with, mapped to its S3 code and HTTP status in one
//! place.

use s3s::{s3_error, S3Error, S3ErrorCode};

use crate::catalog::CatalogError;
use crate::data::PutError;

pub(super) fn internal(e: impl std::fmt::Display) -> S3Error {
    tracing::error!("internal error: {e}");
    S3Error::with_message(S3ErrorCode::InternalError, e.to_string())
}

pub(super) fn meta_err(e: CatalogError) -> S3Error {
    match e {
        CatalogError::NoSuchBucket => s3_error!(NoSuchBucket),
        CatalogError::NotOwner => s3_error!(AccessDenied, "the bucket belongs to another account"),
        CatalogError::BucketExists { owned_by_you: true } => s3_error!(BucketAlreadyOwnedByYou),
        CatalogError::BucketExists { owned_by_you: false } => s3_error!(BucketAlreadyExists),
        CatalogError::BucketNotEmpty => s3_error!(BucketNotEmpty),
        CatalogError::NoSuchUpload => s3_error!(NoSuchUpload),
        CatalogError::PreconditionFailed => s3_error!(PreconditionFailed),
        CatalogError::Invalid(m) => S3Error::with_message(S3ErrorCode::InvalidArgument, m),
        e => internal(e),
    }
}

pub(super) fn put_err(e: PutError) -> S3Error {
    match e {
        PutError::TooLarge => s3_error!(EntityTooLarge),
        // s3s's body errors are private types; their messages name the cause.
        PutError::Body(m) if m.contains("Sha256Mismatch") => {
            let mut e = S3Error::with_message(
                S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into()),
                "the body does not match the x-amz-content-sha256 it was signed with",
            );
            e.set_status_code(http::StatusCode::BAD_REQUEST);
            e
        }
        PutError::Body(m) if m.contains("SignatureMismatch") => {
            S3Error::with_message(S3ErrorCode::SignatureDoesNotMatch, "a chunk signature does not match")
        }
        PutError::Body(m) if m.contains("FormatError") || m.contains("TooLarge") || m.contains("TooMany") => {
            S3Error::with_message(S3ErrorCode::InvalidRequest, format!("malformed aws-chunked body: {m}"))
        }
        PutError::Body(m) => S3Error::with_message(S3ErrorCode::IncompleteBody, m),
        // The cluster has fewer datanodes than the class's policy is wide.
        PutError::Stream(client::StreamError::Meta(e @ proto::meta::MetaError::NotEnoughNodes { .. })) => {
            S3Error::with_message(S3ErrorCode::InvalidStorageClass, format!("this cluster cannot store the class: {e}"))
        }
        PutError::Stream(e) => {
            tracing::error!("writing object data: {e}");
            S3Error::with_message(S3ErrorCode::ServiceUnavailable, format!("cannot store the data now: {e}"))
        }
    }
}

pub(super) fn not_modified() -> S3Error {
    let mut e = s3_error!(NotModified);
    e.set_status_code(http::StatusCode::NOT_MODIFIED);
    e
}

pub(super) fn invalid_part_number() -> S3Error {
    let mut e = S3Error::with_message(
        S3ErrorCode::Custom("InvalidPartNumber".into()),
        "The requested partnumber is not satisfiable",
    );
    e.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
    e
}
