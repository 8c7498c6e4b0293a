//! Between s3s's types and the gateway's records: timestamps, ETags, storage classes,
//! checksums, and an object's content headers and user metadata.
//!
//! s3s's generated inputs and outputs share field names across operations (every PUT-like
//! input has `content_type`, every output with a checksum has `checksum_crc32`, ...) but
//! no traits. `view!` declares a struct of references to such fields and builds it from
//! each type named, so that code over "any input with content headers" is written once.

use std::time::Duration;

use s3s::dto::*;
use s3s::{s3_error, S3Result};

use crate::catalog::ObjectInfo;
use crate::checksum::{Algo, Checksum};
use crate::class::StorageClass as Class;
use crate::limits::USER_METADATA_BYTES_MAX;

/// `view!(struct View { field: Type, ... } for Input, ...)`: a `View<'a>` of references to
/// the fields named, and `From<&'a Input>` for each input.
/// `view!(struct View([Type; N]) = [field, ...] for Input, ...)`: the same for fields of
/// one type, as an array in the order named; with `mut`, of mutable references, from
/// `&'a mut Input`.
macro_rules! view {
    ($(#[$m:meta])* $vis:vis struct $view:ident { $($f:ident: $t:ty),+ $(,)? } for $($input:ty),+ $(,)?) => {
        $(#[$m])* $vis struct $view<'a> { $(pub $f: &'a $t),+ }
        view!(@from $view [] { $($f),+ } $($input),+);
    };
    ($(#[$m:meta])* $vis:vis struct $view:ident([$t:ty; $n:literal]) = [$($f:ident),+ $(,)?] for $($input:ty),+ $(,)?) => {
        $(#[$m])* $vis struct $view<'a>(pub [&'a $t; $n]);
        view!(@from $view [] [$($f),+] $($input),+);
    };
    ($(#[$m:meta])* mut $vis:vis struct $view:ident([$t:ty; $n:literal]) = [$($f:ident),+ $(,)?] for $($input:ty),+ $(,)?) => {
        $(#[$m])* $vis struct $view<'a>(pub [&'a mut $t; $n]);
        view!(@from $view [mut] [$($f),+] $($input),+);
    };
    (@from $view:ident $mut:tt $fields:tt $($input:ty),+) => {
        $(view!(@one $view $mut $fields $input);)+
    };
    (@one $view:ident [] { $($f:ident),+ } $input:ty) => {
        impl<'a> From<&'a $input> for $view<'a> {
            fn from(i: &'a $input) -> $view<'a> {
                $view { $($f: &i.$f),+ }
            }
        }
    };
    (@one $view:ident [] [$($f:ident),+] $input:ty) => {
        impl<'a> From<&'a $input> for $view<'a> {
            fn from(i: &'a $input) -> $view<'a> {
                $view([$(&i.$f),+])
            }
        }
    };
    (@one $view:ident [mut] [$($f:ident),+] $input:ty) => {
        impl<'a> From<&'a mut $input> for $view<'a> {
            fn from(i: &'a mut $input) -> $view<'a> {
                $view([$(&mut i.$f),+])
            }
        }
    };
}

view! {
    /// The checksum values a request sent in headers (or a part entry of
    /// CompleteMultipartUpload), in `Algo` order.
    pub(super) struct Given([Option<String>; 5]) = [
        checksum_crc32,
        checksum_crc32c,
        checksum_crc64nvme,
        checksum_sha1,
        checksum_sha256,
    ] for PutObjectInput, UploadPartInput, CompleteMultipartUploadInput, CompletedPart
}

impl Given<'_> {
    pub(super) fn get(&self, a: Algo) -> Option<&str> {
        self.0[a as usize].as_deref()
    }

    /// The algorithms a value was sent for.
    pub(super) fn sent(&self) -> Vec<Algo> {
        Algo::ALL.into_iter().filter(|a| self.get(*a).is_some()).collect()
    }
}

view! {
    /// The checksum fields of an answer, in `Algo` order.
    mut pub(super) struct Checksums([Option<String>; 5]) = [
        checksum_crc32,
        checksum_crc32c,
        checksum_crc64nvme,
        checksum_sha1,
        checksum_sha256,
    ] for PutObjectOutput, HeadObjectOutput, UploadPartOutput, CopyPartResult, CompleteMultipartUploadOutput, Part,
        ObjectPart, s3s::dto::Checksum
}

impl Checksums<'_> {
    /// Sets the field of `c`'s algorithm to its value.
    pub(super) fn set(self, c: &Checksum) {
        if let Some(field) = self.0.into_iter().nth(c.algo as usize) {
            *field = Some(c.value.clone());
        }
    }
}

view! {
    /// What a new object is given by the request that makes it (PUT, CopyObject with
    /// `REPLACE`, CreateMultipartUpload): content headers and user metadata.
    pub(super) struct ContentHeaders {
        content_type: Option<ContentType>,
        content_encoding: Option<ContentEncoding>,
        content_disposition: Option<ContentDisposition>,
        content_language: Option<ContentLanguage>,
        cache_control: Option<CacheControl>,
        expires: Option<Expires>,
        metadata: Option<Metadata>,
    } for PutObjectInput, CopyObjectInput, CreateMultipartUploadInput
}

impl ContentHeaders<'_> {
    /// The object info these headers give (class, policy and checksum come later).
    pub(super) fn info(&self) -> S3Result<ObjectInfo> {
        // The aws-chunked framing is transport, not a property of the object.
        let content_encoding = self
            .content_encoding
            .as_ref()
            .map(|e| {
                e.split(',')
                    .map(str::trim)
                    .filter(|p| !p.eq_ignore_ascii_case("aws-chunked"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|e| !e.is_empty());
        let expires = self.expires.as_ref().map(|t| {
            let mut buf = Vec::new();
            let _ = t.format(TimestampFormat::HttpDate, &mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        });
        let user: std::collections::BTreeMap<String, String> =
            self.metadata.clone().unwrap_or_default().into_iter().collect();
        let user_bytes: usize = user.iter().map(|(k, v)| k.len() + v.len()).sum();
        if user_bytes > USER_METADATA_BYTES_MAX {
            return Err(s3_error!(MetadataTooLarge, "user metadata is limited to 2 KB"));
        }
        Ok(ObjectInfo {
            content_type: self.content_type.as_ref().map(|c| c.to_string()),
            content_encoding,
            content_disposition: self.content_disposition.clone(),
            content_language: self.content_language.clone(),
            cache_control: self.cache_control.clone(),
            expires,
            user,
            ..Default::default()
        })
    }
}

pub(super) fn ts(ms: i64) -> Timestamp {
    Timestamp::from(std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

pub(super) fn etag(s: &str) -> ETag {
    ETag::Strong(s.to_string())
}

pub(super) fn ms_of(t: &Timestamp) -> i64 {
    let t: time::OffsetDateTime = t.clone().into();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub(super) fn parse_expires(s: &Option<String>) -> Option<Timestamp> {
    s.as_ref().and_then(|s| Timestamp::parse(TimestampFormat::HttpDate, s).ok())
}

/// The S3 name of an object's or upload's class (STANDARD when none was recorded).
pub(super) fn class_name(c: Option<Class>) -> &'static str {
    c.unwrap_or(Class::Standard).name()
}

pub(super) fn checksum_algorithm(a: Algo) -> ChecksumAlgorithm {
    ChecksumAlgorithm::from_static(a.name())
}

pub(super) fn owner(tenant: &str) -> Owner {
    Owner { display_name: Some(tenant.to_string()), id: Some(tenant.to_string()) }
}

pub(super) fn initiator(tenant: &str) -> Initiator {
    Initiator { display_name: Some(tenant.to_string()), id: Some(tenant.to_string()) }
}
