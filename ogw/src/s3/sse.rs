//! Server-side encryption as S3 shows it (`crate::sse` holds the model): the
//! `x-amz-server-side-encryption*` headers of requests that make bytes and of requests
//! that read SSE-C objects, a bucket's default encryption (Put/Get/DeleteBucketEncryption),
//! and the headers answers carry.

use s3s::dto::*;
use s3s::{s3_error, S3Error, S3Request, S3Response, S3Result};
use serde::{Deserialize, Serialize};

use super::Gateway;
use crate::catalog::{Bucket as BucketRec, ConfigCache, ConfigKind, ObjectInfo};
use crate::sse::{customer_key, Cipher, DataKey, KeyError, Mode, Sse};

/// A bucket's default encryption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct BucketDefault {
    mode: Mode,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    kms_key: Option<String>,
}

pub(super) fn cache() -> ConfigCache<BucketDefault> {
    ConfigCache::new(ConfigKind::Encryption, |doc, _| serde_json::from_str(doc).ok())
}

fn bad(msg: &str) -> S3Error {
    S3Error::with_message(s3s::S3ErrorCode::InvalidArgument, msg.to_owned())
}

/// A customer's key as a request sends it (the three headers), if it sends one.
pub(super) fn customer(
    algorithm: &Option<String>,
    key: &Option<String>,
    md5: &Option<String>,
) -> S3Result<Option<(DataKey, String)>> {
    match (algorithm.as_deref(), key, md5) {
        (None, None, None) => Ok(None),
        (Some("AES256"), Some(k), Some(m)) => customer_key(k, m).map(Some).map_err(|e| bad(&e)),
        (Some("AES256"), _, _) => Err(bad("Requests specifying Server Side Encryption with Customer provided keys must provide an appropriate secret key and its MD5.")),
        (Some(_), _, _) => Err(bad("The requested encryption algorithm is not valid, must be AES256.")),
        (None, _, _) => Err(bad("Requests specifying Server Side Encryption with Customer provided keys must provide a valid encryption algorithm.")),
    }
}

view! {
    /// What a request that makes bytes asks of encryption.
    pub(super) struct Asked {
        server_side_encryption: Option<ServerSideEncryption>,
        ssekms_key_id: Option<SSEKMSKeyId>,
        sse_customer_algorithm: Option<SSECustomerAlgorithm>,
        sse_customer_key: Option<SSECustomerKey>,
        sse_customer_key_md5: Option<SSECustomerKeyMD5>,
    } for PutObjectInput, CopyObjectInput, CreateMultipartUploadInput
}

view! {
    /// The customer's key a request that reads or adds to an SSE-C object sends.
    pub(super) struct KeyGiven {
        sse_customer_algorithm: Option<SSECustomerAlgorithm>,
        sse_customer_key: Option<SSECustomerKey>,
        sse_customer_key_md5: Option<SSECustomerKeyMD5>,
    } for GetObjectInput, HeadObjectInput, UploadPartInput, UploadPartCopyInput, CompleteMultipartUploadInput, CopyObjectInput, GetObjectAttributesInput
}

impl KeyGiven<'_> {
    pub(super) fn key(&self) -> S3Result<Option<(DataKey, String)>> {
        customer(self.sse_customer_algorithm, self.sse_customer_key, self.sse_customer_key_md5)
    }
}

view! {
    /// The customer's key of a copy's SSE-C source.
    pub(super) struct SourceKey {
        copy_source_sse_customer_algorithm: Option<CopySourceSSECustomerAlgorithm>,
        copy_source_sse_customer_key: Option<CopySourceSSECustomerKey>,
        copy_source_sse_customer_key_md5: Option<CopySourceSSECustomerKeyMD5>,
    } for CopyObjectInput, UploadPartCopyInput
}

impl SourceKey<'_> {
    pub(super) fn key(&self) -> S3Result<Option<(DataKey, String)>> {
        customer(
            self.copy_source_sse_customer_algorithm,
            self.copy_source_sse_customer_key,
            self.copy_source_sse_customer_key_md5,
        )
    }
}

impl Gateway {
    /// The encryption of a new object (or upload): the one its request asks for, else
    /// the bucket's default, else none; with the data key.
    pub(super) async fn encryption_of(&self, b: &BucketRec, a: Asked<'_>) -> S3Result<Option<(Sse, DataKey)>> {
        let customer = customer(a.sse_customer_algorithm, a.sse_customer_key, a.sse_customer_key_md5)?;
        let mode = match a.server_side_encryption.as_ref().map(|s| s.as_str()) {
            None => None,
            Some(ServerSideEncryption::AES256) => Some(Mode::S3),
            Some(ServerSideEncryption::AWS_KMS) | Some(ServerSideEncryption::AWS_KMS_DSSE) => Some(Mode::Kms),
            Some(other) => return Err(bad(&format!("The encryption method specified is not supported: {other}"))),
        };
        if customer.is_some() && mode.is_some() {
            return Err(bad("Server Side Encryption with Customer provided key is incompatible with the encryption method specified"));
        }
        if a.ssekms_key_id.is_some() && mode != Some(Mode::Kms) {
            return Err(bad(
                "x-amz-server-side-encryption-aws-kms-key-id is only valid with x-amz-server-side-encryption: aws:kms",
            ));
        }
        let default = || async { self.encryptions.get(&self.catalog, &b.name).await };
        let (mode, kms_key) = match (customer.is_some(), mode) {
            (true, _) => (Mode::Customer, None),
            (false, Some(Mode::Kms)) => {
                let key = match a.ssekms_key_id {
                    Some(k) => k.clone(),
                    None => match default().await?.and_then(|d| d.kms_key.clone()) {
                        Some(k) => k,
                        None => {
                            return Err(bad("aws:kms needs a key id (x-amz-server-side-encryption-aws-kms-key-id)"))
                        }
                    },
                };
                (Mode::Kms, Some(key))
            }
            (false, Some(m)) => (m, None),
            (false, None) => match default().await? {
                Some(d) => (d.mode, d.kms_key.clone()),
                None => return Ok(None),
            },
        };
        Ok(Some(Sse::new(&self.catalog.key, mode, kms_key, customer)))
    }

    /// The data key of `info`'s bytes (none: stored in clear), given the customer's
    /// key a request sent. A customer's key sent for an object not encrypted with one is
    /// refused, as AWS does.
    pub(super) fn data_key(&self, info: &ObjectInfo, given: Option<&(DataKey, String)>) -> S3Result<Option<DataKey>> {
        match &info.sse {
            None if given.is_some() => Err(s3_error!(InvalidRequest, "The encryption parameters are not applicable to this object.")),
            None => Ok(None),
            Some(s) if s.mode != Mode::Customer && given.is_some() => {
                Err(s3_error!(InvalidRequest, "The encryption parameters are not applicable to this object."))
            }
            Some(s) => s.key(&self.catalog.key, given).map(Some).map_err(|e| match e {
                KeyError::CustomerKeyMissing => s3_error!(
                    InvalidRequest,
                    "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object."
                ),
                KeyError::CustomerKeyWrong => s3_error!(InvalidRequest, "The provided encryption key does not match the object's."),
                KeyError::Sealed(m) => super::errors::internal(m),
            }),
        }
    }
}

/// The keystream reading `info`'s bytes from `pos` (its parts' IVs and sizes).
pub(super) fn cipher(key: DataKey, info: &ObjectInfo, size: u64, pos: u64) -> S3Result<Cipher> {
    let sse = info.sse.as_ref().ok_or_else(|| super::errors::internal("no encryption record"))?;
    // (A copy of a multipart object keeps its part sizes, for partNumber reads, but is
    // encrypted whole, with one IV.)
    let sizes = if info.parts.is_empty() || sse.ivs.len() == 1 { vec![size] } else { info.parts.clone() };
    Cipher::new(key, &sse.ivs, &sizes, pos).map_err(super::errors::internal)
}

/// Decrypts a stream of `info`'s bytes starting at `pos`.
pub(super) fn decrypting<S, E>(
    body: S,
    mut c: Cipher,
) -> impl futures::Stream<Item = Result<bytes::Bytes, E>> + Send + Sync + 'static
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Send + Sync + 'static,
{
    use futures::StreamExt;
    body.map(move |r| {
        r.map(|b| {
            let mut v = b.to_vec();
            c.apply(&mut v);
            bytes::Bytes::from(v)
        })
    })
}

/// Sets the encryption headers of an answer about bytes encrypted as `sse`.
/// (`@server`: an answer without the SSE-C fields, CompleteMultipartUpload's.)
macro_rules! sse_headers {
    ($out:expr, $sse:expr) => {
        if let Some(s) = $sse {
            if s.mode == crate::sse::Mode::Customer {
                $out.sse_customer_algorithm = Some("AES256".into());
                $out.sse_customer_key_md5 = s.key_md5.clone();
            }
        }
        $crate::s3::sse::sse_headers!(@server $out, $sse)
    };
    (@server $out:expr, $sse:expr) => {
        if let Some(s) = $sse {
            match s.mode {
                crate::sse::Mode::Customer => {}
                crate::sse::Mode::S3 => {
                    $out.server_side_encryption =
                        Some(s3s::dto::ServerSideEncryption::from_static(s3s::dto::ServerSideEncryption::AES256));
                }
                crate::sse::Mode::Kms => {
                    $out.server_side_encryption =
                        Some(s3s::dto::ServerSideEncryption::from_static(s3s::dto::ServerSideEncryption::AWS_KMS));
                    $out.ssekms_key_id = s.kms_key.clone();
                }
            }
        }
    };
}
pub(crate) use sse_headers;

pub(super) async fn put_bucket_encryption(
    gw: &Gateway,
    req: S3Request<PutBucketEncryptionInput>,
) -> S3Result<S3Response<PutBucketEncryptionOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    let rules = &req.input.server_side_encryption_configuration.rules;
    let [rule] = rules.as_slice() else {
        return Err(s3_error!(MalformedXML, "give exactly one encryption rule"));
    };
    let by = rule.apply_server_side_encryption_by_default.as_ref().ok_or_else(|| s3_error!(MalformedXML))?;
    let d = match by.sse_algorithm.as_str() {
        ServerSideEncryption::AES256 if by.kms_master_key_id.is_none() => {
            BucketDefault { mode: Mode::S3, kms_key: None }
        }
        ServerSideEncryption::AWS_KMS | ServerSideEncryption::AWS_KMS_DSSE => match &by.kms_master_key_id {
            Some(k) => BucketDefault { mode: Mode::Kms, kms_key: Some(k.clone()) },
            None => return Err(bad("aws:kms needs a KMSMasterKeyID")),
        },
        _ => return Err(s3_error!(MalformedXML, "SSEAlgorithm must be AES256, or aws:kms with a KMSMasterKeyID")),
    };
    let doc = serde_json::to_string(&d).expect("plain data");
    gw.catalog.set_bucket_config(&b, ConfigKind::Encryption, Some(&doc)).await?;
    gw.encryptions.forget(&b.name);
    Ok(S3Response::new(PutBucketEncryptionOutput::default()))
}

pub(super) async fn get_bucket_encryption(
    gw: &Gateway,
    req: S3Request<GetBucketEncryptionInput>,
) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    let d = gw.encryptions.get(&gw.catalog, &b.name).await?.ok_or_else(|| {
        let mut e = s3_error!(
            ServerSideEncryptionConfigurationNotFoundError,
            "The server side encryption configuration was not found"
        );
        e.set_status_code(http::StatusCode::NOT_FOUND); // (as AWS; s3s says 400)
        e
    })?;
    let algorithm = match d.mode {
        Mode::Kms => ServerSideEncryption::AWS_KMS,
        _ => ServerSideEncryption::AES256,
    };
    Ok(S3Response::new(GetBucketEncryptionOutput {
        server_side_encryption_configuration: Some(ServerSideEncryptionConfiguration {
            rules: vec![ServerSideEncryptionRule {
                apply_server_side_encryption_by_default: Some(ServerSideEncryptionByDefault {
                    sse_algorithm: ServerSideEncryption::from_static(algorithm),
                    kms_master_key_id: d.kms_key.clone(),
                }),
                bucket_key_enabled: Some(false),
            }],
        }),
    }))
}

pub(super) async fn delete_bucket_encryption(
    gw: &Gateway,
    req: S3Request<DeleteBucketEncryptionInput>,
) -> S3Result<S3Response<DeleteBucketEncryptionOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    gw.catalog.set_bucket_config(&b, ConfigKind::Encryption, None).await?;
    gw.encryptions.forget(&b.name);
    Ok(S3Response::new(DeleteBucketEncryptionOutput::default()))
}
