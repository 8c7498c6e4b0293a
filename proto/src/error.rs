//! Typed refusals and failures of extent operations. They cross the wire as a code,
//! two numbers and a message, so a client gets back exactly the variant the datanode
//! produced.

use crate::{Epoch, ExtentId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtentError {
    #[error("extent {extent} not found")]
    NotFound { extent: ExtentId },
    #[error("extent {extent} already exists")]
    AlreadyExists { extent: ExtentId },
    #[error("append at offset {expected_offset} refused: extent length is {length}")]
    OffsetMismatch { expected_offset: u64, length: u64 },
    #[error("epoch {epoch} is older than the extent's epoch {current}")]
    StaleEpoch { epoch: Epoch, current: Epoch },
    #[error("extent is sealed at length {length}")]
    Sealed { length: u64 },
    #[error("append of {bytes} bytes exceeds the limit of {limit} bytes")]
    AppendTooLarge { bytes: u64, limit: u64 },
    #[error("extent full: length {length} plus this append would pass {limit} bytes")]
    ExtentFull { length: u64, limit: u64 },
    #[error("device {device} has no free space")]
    NoSpace { device: u64 },
    #[error("stored data failed its checksum at extent offset {offset}")]
    ChecksumMismatch { offset: u64 },
    #[error("append payload does not match its crc32c (sent {sent:#010x}, computed {computed:#010x})")]
    PayloadChecksum { sent: u64, computed: u64 },
    #[error("range [{offset}, +{len}) is past the readable length {length}")]
    OutOfRange { offset: u64, len: u64, length: u64 },
    #[error("read of {len} bytes exceeds the limit of {limit} bytes")]
    ReadTooLarge { len: u64, limit: u64 },
    #[error("cannot seal at {requested}: this replica holds only {length} bytes")]
    SealBeyondEnd { requested: u64, length: u64 },
    #[error("cannot seal at {requested}: not an append boundary (nearest below is {boundary})")]
    NotAppendBoundary { requested: u64, boundary: u64 },
    #[error("extent is already sealed at {length}, not {requested}")]
    SealConflict { requested: u64, length: u64 },
    #[error("no device {device} on this datanode")]
    NoSuchDevice { device: u64 },
    #[error("extent failed after an I/O error and takes no more appends: {0}")]
    Failed(String),
    #[error("I/O error: {0}")]
    Io(String),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("frame of {bytes} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge { bytes: u64, limit: u64 },
    #[error("unsupported protocol version {version}")]
    UnsupportedVersion { version: u64 },
    #[error("server is shutting down")]
    ShuttingDown,
    /// The peer did not prove it holds a cluster secret.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The peer's role may not make this request.
    #[error("forbidden: {0}")]
    Forbidden(String),
}

impl ExtentError {
    /// Wire form: (code, a, b, message).
    pub fn to_wire(&self) -> (u16, u64, u64, String) {
        use ExtentError::*;
        match self {
            NotFound { extent } => (1, extent.0, 0, String::new()),
            AlreadyExists { extent } => (2, extent.0, 0, String::new()),
            OffsetMismatch { expected_offset, length } => (3, *expected_offset, *length, String::new()),
            StaleEpoch { epoch, current } => (4, epoch.0, current.0, String::new()),
            Sealed { length } => (5, *length, 0, String::new()),
            AppendTooLarge { bytes, limit } => (6, *bytes, *limit, String::new()),
            ExtentFull { length, limit } => (7, *length, *limit, String::new()),
            NoSpace { device } => (8, *device, 0, String::new()),
            ChecksumMismatch { offset } => (9, *offset, 0, String::new()),
            PayloadChecksum { sent, computed } => (10, *sent, *computed, String::new()),
            OutOfRange { offset, len, length } => (11, *offset, *length, len.to_string()),
            ReadTooLarge { len, limit } => (12, *len, *limit, String::new()),
            SealBeyondEnd { requested, length } => (13, *requested, *length, String::new()),
            NotAppendBoundary { requested, boundary } => (14, *requested, *boundary, String::new()),
            SealConflict { requested, length } => (15, *requested, *length, String::new()),
            NoSuchDevice { device } => (16, *device, 0, String::new()),
            Failed(m) => (17, 0, 0, m.clone()),
            Io(m) => (18, 0, 0, m.clone()),
            Malformed(m) => (19, 0, 0, m.clone()),
            FrameTooLarge { bytes, limit } => (20, *bytes, *limit, String::new()),
            UnsupportedVersion { version } => (21, *version, 0, String::new()),
            ShuttingDown => (22, 0, 0, String::new()),
            Unauthorized(m) => (23, 0, 0, m.clone()),
            Forbidden(m) => (24, 0, 0, m.clone()),
        }
    }

    pub fn from_wire(code: u16, a: u64, b: u64, msg: String) -> ExtentError {
        use ExtentError::*;
        match code {
            1 => NotFound { extent: ExtentId(a) },
            2 => AlreadyExists { extent: ExtentId(a) },
            3 => OffsetMismatch { expected_offset: a, length: b },
            4 => StaleEpoch { epoch: Epoch(a), current: Epoch(b) },
            5 => Sealed { length: a },
            6 => AppendTooLarge { bytes: a, limit: b },
            7 => ExtentFull { length: a, limit: b },
            8 => NoSpace { device: a },
            9 => ChecksumMismatch { offset: a },
            10 => PayloadChecksum { sent: a, computed: b },
            11 => OutOfRange { offset: a, len: msg.parse().unwrap_or(0), length: b },
            12 => ReadTooLarge { len: a, limit: b },
            13 => SealBeyondEnd { requested: a, length: b },
            14 => NotAppendBoundary { requested: a, boundary: b },
            15 => SealConflict { requested: a, length: b },
            16 => NoSuchDevice { device: a },
            17 => Failed(msg),
            18 => Io(msg),
            19 => Malformed(msg),
            20 => FrameTooLarge { bytes: a, limit: b },
            21 => UnsupportedVersion { version: a },
            22 => ShuttingDown,
            23 => Unauthorized(msg),
            24 => Forbidden(msg),
            other => Malformed(format!("unknown error code {other}: {msg}")),
        }
    }
}
