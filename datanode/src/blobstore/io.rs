//! Batched positional writes on one file descriptor: io_uring where the kernel allows
//! it (all writes of a group-commit round in flight at once), plain `pwrite` otherwise.

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, types, IoUring};

use crate::limits::URING_ENTRIES;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IoEngineKind {
    /// io_uring if it can be set up, otherwise sync.
    Auto,
    Uring,
    Sync,
}

impl std::str::FromStr for IoEngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(IoEngineKind::Auto),
            "uring" | "io_uring" => Ok(IoEngineKind::Uring),
            "sync" => Ok(IoEngineKind::Sync),
            _ => Err(format!("unknown io engine '{s}' (expected auto, uring or sync)")),
        }
    }
}

pub enum IoEngine {
    Uring(Box<IoUring>),
    Sync,
}

/// A segment to write: `len` bytes at `ptr` to device offset `offset`.
#[derive(Clone, Copy)]
pub struct Segment {
    pub offset: u64,
    pub ptr: *const u8,
    pub len: usize,
}

impl IoEngine {
    pub fn new(kind: IoEngineKind) -> io::Result<IoEngine> {
        match kind {
            IoEngineKind::Sync => Ok(IoEngine::Sync),
            IoEngineKind::Uring => Ok(IoEngine::Uring(Box::new(IoUring::new(URING_ENTRIES)?))),
            IoEngineKind::Auto => match IoUring::new(URING_ENTRIES) {
                Ok(r) => Ok(IoEngine::Uring(Box::new(r))),
                Err(e) => {
                    tracing::warn!("io_uring unavailable ({e}); using pwrite");
                    Ok(IoEngine::Sync)
                }
            },
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            IoEngine::Uring(_) => "io_uring",
            IoEngine::Sync => "pwrite",
        }
    }

    /// Writes every segment; returns one result per segment.
    ///
    /// # Safety
    /// Every segment's `ptr..ptr+len` must stay valid until this returns.
    pub unsafe fn write_all(&mut self, fd: RawFd, segs: &[Segment]) -> Vec<io::Result<()>> {
        match self {
            IoEngine::Sync => segs.iter().map(|s| pwrite_all(fd, s.ptr, s.len, s.offset)).collect(),
            IoEngine::Uring(ring) => {
                let mut results: Vec<io::Result<()>> = Vec::with_capacity(segs.len());
                for chunk in segs.chunks(URING_ENTRIES as usize) {
                    let mut done: Vec<Option<io::Result<()>>> = (0..chunk.len()).map(|_| None).collect();
                    {
                        let mut sq = ring.submission();
                        for (i, s) in chunk.iter().enumerate() {
                            let e = opcode::Write::new(types::Fd(fd), s.ptr, s.len as u32)
                                .offset(s.offset)
                                .build()
                                .user_data(i as u64);
                            sq.push(&e).expect("ring has room for a chunk");
                        }
                    }
                    let mut left = chunk.len();
                    while left > 0 {
                        if let Err(e) = ring.submit_and_wait(1) {
                            if e.kind() == io::ErrorKind::Interrupted {
                                continue;
                            }
                            // The ring is broken: finish what is left with pwrite.
                            for (i, s) in chunk.iter().enumerate() {
                                if done[i].is_none() {
                                    done[i] = Some(pwrite_all(fd, s.ptr, s.len, s.offset));
                                }
                            }
                            break;
                        }
                        for cqe in ring.completion() {
                            let i = cqe.user_data() as usize;
                            let s = chunk[i];
                            let r = cqe.result();
                            done[i] = Some(if r < 0 {
                                Err(io::Error::from_raw_os_error(-r))
                            } else if (r as usize) < s.len {
                                // Short write: finish the rest synchronously.
                                let n = r as usize;
                                pwrite_all(fd, s.ptr.add(n), s.len - n, s.offset + n as u64)
                            } else {
                                Ok(())
                            });
                            left -= 1;
                        }
                    }
                    results.extend(done.into_iter().map(|d| d.expect("every write completed")));
                }
                results
            }
        }
    }
}

/// # Safety
/// `ptr..ptr+len` must be valid.
pub unsafe fn pwrite_all(fd: RawFd, ptr: *const u8, len: usize, offset: u64) -> io::Result<()> {
    positional(len, io::ErrorKind::WriteZero, "pwrite wrote nothing", |done| {
        // SAFETY: `done < len`, so the rest lies inside the caller's valid range.
        unsafe {
            libc::pwrite(fd, ptr.add(done) as *const libc::c_void, len - done, (offset + done as u64) as libc::off_t)
        }
    })
}

/// Writes all of `buf` at `offset`.
pub fn pwrite_all_at(fd: RawFd, buf: &[u8], offset: u64) -> io::Result<()> {
    // SAFETY: the slice is valid for reads of its length.
    unsafe { pwrite_all(fd, buf.as_ptr(), buf.len(), offset) }
}

pub fn pread_exact(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let (ptr, len) = (buf.as_mut_ptr(), buf.len());
    positional(len, io::ErrorKind::UnexpectedEof, "read past the device's end", |done| {
        // SAFETY: `done < len`, so the rest lies inside the slice, valid for writes.
        unsafe {
            libc::pread(fd, ptr.add(done) as *mut libc::c_void, len - done, (offset + done as u64) as libc::off_t)
        }
    })
}

/// Repeats a positional read or write until `len` bytes are moved: `op(done)` moves
/// some of the rest and returns how many bytes (or -1 with errno). Interrupted calls are
/// retried; a call that moves nothing is the error `kind` (`what`).
fn positional(len: usize, kind: io::ErrorKind, what: &str, mut op: impl FnMut(usize) -> isize) -> io::Result<()> {
    let mut done = 0;
    while done < len {
        let n = op(done);
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(kind, what));
        }
        done += n as usize;
    }
    Ok(())
}

pub fn fdatasync(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we own.
    if unsafe { libc::fdatasync(fd) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
