//! A PUT's or UploadPart's body on its way into the LogStreams: streamed through its MD5
//! and the flexible checksum asked for, then checked against Content-Length,
//! Content-MD5 and the checksum the client sent (header or aws-chunked trailer).

use base64::Engine;
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Result};

use super::dto::Given;
use super::errors::bad_digest;
use super::{Gateway, Redundancy};
use crate::checksum::{self, Algo, Checksum};
use crate::limits::PUT_BYTES_MAX;

view! {
    /// What a PUT or UploadPart says of its body.
    pub(super) struct Sent {
        content_length: Option<ContentLength>,
        content_md5: Option<ContentMD5>,
        checksum_algorithm: Option<ChecksumAlgorithm>,
    } for PutObjectInput, UploadPartInput
}

/// A body's MD5 and the flexible checksum asked for, fed as it passes through.
pub(super) struct Hashing {
    md5: Md5,
    checksum: Option<checksum::Hasher>,
}

impl Hashing {
    pub(super) fn new(algo: Option<Algo>) -> Hashing {
        Hashing { md5: Md5::new(), checksum: algo.map(Algo::hasher) }
    }

    pub(super) fn update(&mut self, b: &[u8]) {
        self.md5.update(b);
        if let Some(h) = &mut self.checksum {
            h.update(b);
        }
    }

    pub(super) fn finish(self) -> ([u8; 16], Option<Checksum>) {
        (self.md5.finalize().into(), self.checksum.map(checksum::Hasher::finish))
    }
}

/// What a PUT or UploadPart stored: size, slices, MD5, and the flexible checksum.
pub(super) struct Stored {
    pub size: u64,
    pub slices: Vec<client::Slice>,
    pub md5: [u8; 16],
    pub checksum: Option<Checksum>,
}

impl Gateway {
    /// Streams `blob`, the body of `req`, into the LogStreams of `policy`, checking
    /// Content-Length, Content-MD5 and the flexible checksum: the one sent (header or
    /// aws-chunked trailer), else the one named, else `upload_algo` (a multipart
    /// upload's). With `encrypt` (a data key and an IV), the bytes are stored encrypted
    /// (the checks are of the plaintext).
    pub(super) async fn store_body<T>(
        &self,
        req: &S3Request<T>,
        policy: Redundancy,
        blob: Option<StreamingBlob>,
        upload_algo: Option<Algo>,
        encrypt: Option<(crate::sse::DataKey, &str)>,
    ) -> S3Result<Stored>
    where
        for<'a> Sent<'a>: From<&'a T>,
        for<'a> Given<'a>: From<&'a T>,
    {
        let (sent, given) = (Sent::from(&req.input), Given::from(&req.input));
        let length = *sent.content_length;
        if length.is_some_and(|l| l as u64 > PUT_BYTES_MAX) {
            return Err(s3_error!(EntityTooLarge));
        }
        let want_md5 = match sent.content_md5 {
            None => None,
            Some(s) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .ok()
                    .filter(|b| b.len() == 16)
                    .ok_or_else(|| s3_error!(InvalidDigest, "Content-MD5 is not a base64 MD5"))?,
            ),
        };
        let trailer = req.headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()).map(str::to_ascii_lowercase);
        let named = sent.checksum_algorithm.as_ref().map(|a| a.as_str()).or(upload_algo.map(Algo::name));
        let algo = checksum::requested(named, given.sent(), trailer.as_deref())?;
        let mut h = Hashing::new(algo);
        let (slices, size) = match (blob, encrypt) {
            (Some(b), None) => self.data.put(policy, b, PUT_BYTES_MAX, |x| h.update(x)).await?,
            (Some(b), Some((key, iv))) => {
                use futures::StreamExt;
                let ivs = [iv.to_owned()];
                let mut c = crate::sse::Cipher::new(key, &ivs, &[u64::MAX], 0).map_err(super::errors::internal)?;
                let h = &mut h;
                let sealed = b.map(move |r| {
                    r.map(|x| {
                        h.update(&x);
                        let mut v = x.to_vec();
                        c.apply(&mut v);
                        bytes::Bytes::from(v)
                    })
                });
                self.data.put(policy, sealed, PUT_BYTES_MAX, |_| {}).await?
            }
            (None, _) => (Vec::new(), 0),
        };
        if length.is_some_and(|l| l as u64 != size) {
            return Err(s3_error!(IncompleteBody, "the body is shorter or longer than Content-Length"));
        }
        let (md5, checksum) = h.finish();
        if want_md5.is_some_and(|w| w != md5) {
            return Err(s3_error!(BadDigest, "the Content-MD5 you specified did not match what we received"));
        }
        if let Some(c) = &checksum {
            let trailed = || {
                req.trailing_headers.as_ref().and_then(|t| {
                    t.read(|hs| hs.get(c.algo.header()).and_then(|v| v.to_str().ok()).map(str::to_string)).flatten()
                })
            };
            let expected = given.get(c.algo).map(str::to_string).or_else(trailed);
            if expected.is_some_and(|e| e != c.value) {
                return Err(bad_digest(c.algo));
            }
        }
        Ok(Stored { size, slices, md5, checksum })
    }
}
