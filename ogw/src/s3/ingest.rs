//! A PUT's or UploadPart's body on its way into the LogStreams: streamed through its MD5
//! and the flexible checksum asked for, then checked against Content-Length,
//! Content-MD5 and the checksum the client sent (header or aws-chunked trailer).

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use base64::Engine;
use bytes::Bytes;
use futures::Stream;
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Result};

use super::dto::Given;
use super::errors::bad_digest;
use super::{Gateway, Redundancy};
use crate::catalog::Layout;
use crate::checksum::{self, Algo, Checksum};
use crate::limits::PUT_BYTES_MAX;
use crate::md5lanes;

view! {
    /// What a PUT or UploadPart says of its body.
    pub(super) struct Sent {
        content_length: Option<ContentLength>,
        content_md5: Option<ContentMD5>,
        checksum_algorithm: Option<ChecksumAlgorithm>,
    } for PutObjectInput, UploadPartInput
}

/// Bodies of this size or more (or of a size not given) hash their MD5 on the shared
/// thread of `md5lanes`, 16 at a time; smaller ones here, where the hand-off would cost
/// more than it saves.
const MD5_LANES_FROM_BYTES: u64 = 1 << 20;

/// A body's MD5 and the flexible checksum asked for, fed as it passes through.
pub(super) struct Hashing {
    md5: Md5Of,
    checksum: Option<checksum::Hasher>,
}

enum Md5Of {
    Here(Md5),
    Lanes(md5lanes::Job),
}

impl Hashing {
    /// Hashes for a body of `size` bytes (`None`: not known).
    pub(super) fn new(algo: Option<Algo>, size: Option<u64>) -> Hashing {
        let lanes = size.is_none_or(|s| s >= MD5_LANES_FROM_BYTES).then(md5lanes::Job::start).flatten();
        let md5 = lanes.map_or_else(|| Md5Of::Here(Md5::new()), Md5Of::Lanes);
        Hashing { md5, checksum: algo.map(Algo::hasher) }
    }

    fn update(&mut self, b: &Bytes) {
        match &mut self.md5 {
            Md5Of::Here(m) => m.update(b),
            Md5Of::Lanes(j) => j.feed(b),
        }
        if let Some(h) = &mut self.checksum {
            h.update(b);
        }
    }

    /// `body`, each piece fed to the hashes as it passes. While the shared MD5 thread
    /// has `md5lanes::LIMIT_BYTES` of this body queued, the next piece waits.
    pub(super) fn hashed<S, E>(&mut self, body: S) -> Hashed<'_, S>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        Hashed { body, h: self }
    }

    pub(super) async fn finish(self) -> S3Result<([u8; 16], Option<Checksum>)> {
        let md5 = match self.md5 {
            Md5Of::Here(m) => m.finalize().into(),
            Md5Of::Lanes(j) => j.finish().await.map_err(super::errors::internal)?,
        };
        Ok((md5, self.checksum.map(checksum::Hasher::finish)))
    }
}

/// A body on its way through `Hashing` (`Hashing::hashed`).
pub(super) struct Hashed<'a, S> {
    body: S,
    h: &'a mut Hashing,
}

impl<S, E> Stream for Hashed<'_, S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let me = self.get_mut();
        if let Md5Of::Lanes(j) = &me.h.md5 {
            ready!(j.poll_room(cx));
        }
        let item = ready!(Pin::new(&mut me.body).poll_next(cx));
        if let Some(Ok(b)) = &item {
            me.h.update(b);
        }
        Poll::Ready(item)
    }
}

/// What a PUT or UploadPart stored: size, where, MD5, and the flexible checksum.
pub(super) struct Stored {
    pub size: u64,
    pub layout: Layout,
    pub md5: [u8; 16],
    pub checksum: Option<Checksum>,
}

impl Gateway {
    /// Streams `blob`, the body of `req`, into the LogStreams of `policy`, checking
    /// Content-Length, Content-MD5 and the flexible checksum: the one sent (header or
    /// aws-chunked trailer), else the one named, else `upload_algo` (a multipart
    /// upload's). With `encrypt` (a data key and an IV), the bytes are stored encrypted
    /// (the checks are of the plaintext). A body of at most `keep_max` bytes is kept
    /// for the row (`Layout::Inline`) instead (0: never).
    pub(super) async fn store_body<T>(
        &self,
        req: &S3Request<T>,
        policy: Redundancy,
        keep_max: u64,
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
        let expect = length.map(|l| l as u64);
        let mut h = Hashing::new(algo, expect);
        let (layout, size) = match (blob, encrypt) {
            (Some(b), None) => self.data.put_object(policy, h.hashed(b), PUT_BYTES_MAX, expect, keep_max).await?,
            (Some(b), Some((key, iv))) => {
                use futures::StreamExt;
                let ivs = [iv.to_owned()];
                let mut c = crate::sse::Cipher::new(key, &ivs, &[u64::MAX], 0).map_err(super::errors::internal)?;
                let sealed = h.hashed(b).map(move |r| {
                    r.map(|x| {
                        let mut v = x.to_vec();
                        c.apply(&mut v);
                        bytes::Bytes::from(v)
                    })
                });
                self.data.put_object(policy, sealed, PUT_BYTES_MAX, expect, keep_max).await?
            }
            (None, _) => (Layout::default(), 0),
        };
        if length.is_some_and(|l| l as u64 != size) {
            return Err(s3_error!(IncompleteBody, "the body is shorter or longer than Content-Length"));
        }
        let (md5, checksum) = h.finish().await?;
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
        Ok(Stored { size, layout, md5, checksum })
    }
}
