//! Frame layout (all integers little-endian):
//!
//! ```text
//! 0      2        3        4            12          16
//! | magic | version | opcode | request_id | body_len | body ...
//! ```
//!
//! `magic` is `0x5354`, `version` is [`VERSION`]. Responses carry the request's opcode
//! with [`RESPONSE_BIT`] set and the request's id, so many requests can be in flight on
//! one connection and complete in any order. A body longer than
//! [`crate::FRAME_BODY_BYTES_MAX`] is refused before any of it is read.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::{ExtentError, FRAME_BODY_BYTES_MAX};

pub const MAGIC: u16 = 0x5354;
pub const VERSION: u8 = 1;
pub const HEADER_BYTES: usize = 16;
pub const RESPONSE_BIT: u8 = 0x80;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub opcode: u8,
    pub request_id: u64,
    pub body_len: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the protocol; the connection cannot be trusted any more.
    #[error("protocol error on request {request_id}: {error}")]
    Protocol { request_id: u64, error: ExtentError },
}

impl FrameHeader {
    pub fn encode(&self, out: &mut BytesMut) {
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[VERSION, self.opcode]);
        out.extend_from_slice(&self.request_id.to_le_bytes());
        out.extend_from_slice(&self.body_len.to_le_bytes());
    }

    /// Parses and checks a header. The request id is returned with the error when it
    /// could be read, so the peer can be told which request was refused.
    pub fn decode(buf: &[u8; HEADER_BYTES]) -> Result<FrameHeader, FrameError> {
        let magic = u16::from_le_bytes([buf[0], buf[1]]);
        let request_id = u64::from_le_bytes(buf[4..12].try_into().expect("8 bytes"));
        let body_len = u32::from_le_bytes(buf[12..16].try_into().expect("4 bytes"));
        let refuse = |error| Err(FrameError::Protocol { request_id, error });
        if magic != MAGIC {
            return refuse(ExtentError::Malformed(format!("bad frame magic {magic:#06x}")));
        }
        if buf[2] != VERSION {
            return refuse(ExtentError::UnsupportedVersion { version: buf[2] as u64 });
        }
        if body_len > FRAME_BODY_BYTES_MAX {
            return refuse(ExtentError::FrameTooLarge { bytes: body_len as u64, limit: FRAME_BODY_BYTES_MAX as u64 });
        }
        Ok(FrameHeader { opcode: buf[3], request_id, body_len })
    }
}

/// Reads one whole frame. `Ok(None)` is a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<(FrameHeader, Bytes)>, FrameError> {
    let Some(header) = read_header(reader).await? else { return Ok(None) };
    Ok(Some((header, read_body(reader, header.body_len as usize).await?)))
}

/// Reads and checks one frame header; the caller reads its `body_len` bytes of body.
pub async fn read_header<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<FrameHeader>, FrameError> {
    let mut head = [0u8; HEADER_BYTES];
    let mut filled = 0;
    while filled < HEADER_BYTES {
        let n = reader.read(&mut head[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        filled += n;
    }
    Ok(Some(FrameHeader::decode(&head)?))
}

/// Reads `len` bytes of frame body.
pub async fn read_body<R: AsyncRead + Unpin>(reader: &mut R, len: usize) -> Result<Bytes, FrameError> {
    // Read straight into spare capacity: no zero-fill pass over large payloads.
    let mut body = BytesMut::with_capacity(len);
    while body.len() < len {
        let mut limited = (&mut *reader).take((len - body.len()) as u64);
        if limited.read_buf(&mut body).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(body.freeze())
}

/// A little-endian cursor over a frame body that reports truncation as a typed error.
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }
    pub fn pos(&self) -> usize {
        self.pos
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], ExtentError> {
        if self.buf.len() - self.pos < n {
            return Err(ExtentError::Malformed(format!(
                "body truncated: need {n} bytes at {}, have {}",
                self.pos,
                self.buf.len() - self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, ExtentError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, ExtentError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    pub fn u32(&mut self) -> Result<u32, ExtentError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    pub fn u64(&mut self) -> Result<u64, ExtentError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], ExtentError> {
        self.take(n)
    }
    pub fn finish(&self) -> Result<(), ExtentError> {
        if self.pos != self.buf.len() {
            return Err(ExtentError::Malformed(format!("{} trailing bytes in body", self.buf.len() - self.pos)));
        }
        Ok(())
    }
}

/// A frame on its way out: header and fixed fields, then the payload (not copied).
pub type Outgoing = (BytesMut, Option<Bytes>);

/// What a frame writer sends: a frame's bytes, and whatever the item holds (a budget)
/// until they are written.
pub trait OutFrame: Send + 'static {
    fn head(&self) -> &[u8];
    fn tail(&self) -> Option<&[u8]>;
}

impl OutFrame for Outgoing {
    fn head(&self) -> &[u8] {
        &self.0
    }
    fn tail(&self) -> Option<&[u8]> {
        self.1.as_deref()
    }
}

/// Writes queued frames to `w` in order, batching small ones into one syscall and
/// flushing whenever the queue runs dry. Returns when the queue closes (after shutting
/// the write side down) or the connection fails.
pub async fn write_frames<W: AsyncWrite + Unpin, F: OutFrame>(w: W, rx: UnboundedReceiver<F>) {
    write_frames_within(w, rx, None).await
}

/// As [`write_frames`], giving up on a peer that takes longer than `stall` to take
/// one frame (it stopped reading its socket).
pub async fn write_frames_within<W: AsyncWrite + Unpin, F: OutFrame>(
    w: W,
    mut rx: UnboundedReceiver<F>,
    stall: Option<std::time::Duration>,
) {
    let mut w = BufWriter::with_capacity(WRITE_BUFFER_BYTES, w);
    while let Some(frame) = rx.recv().await {
        if within(stall, w.write_all(frame.head())).await.is_err() {
            return;
        }
        if let Some(t) = frame.tail() {
            if within(stall, w.write_all(t)).await.is_err() {
                return;
            }
        }
        drop(frame);
        if rx.is_empty() && within(stall, w.flush()).await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

async fn within(
    stall: Option<std::time::Duration>,
    f: impl std::future::Future<Output = std::io::Result<()>>,
) -> std::io::Result<()> {
    match stall {
        Some(t) => tokio::time::timeout(t, f).await.unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
        None => f.await,
    }
}

const WRITE_BUFFER_BYTES: usize = 64 << 10;
