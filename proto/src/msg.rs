//! Requests and responses of the datanode data path, and their body encodings.
//! Encoders return the fixed part and, for appends and reads, the payload as a
//! separate `Bytes` so it is written to the socket without being copied again.

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::{Cursor, FrameHeader, HEADER_BYTES, RESPONSE_BIT};
use crate::{Epoch, ExtentError, ExtentId, NodeId};

#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Create = 1,
    Append = 2,
    Read = 3,
    Seal = 4,
    Delete = 5,
    Stat = 6,
    List = 7,
    NodeStat = 8,
    Fence = 9,
    Records = 10,
    Rebuild = 11,
}

impl Opcode {
    pub fn from_u8(v: u8) -> Option<Opcode> {
        use Opcode::*;
        Some(match v {
            1 => Create,
            2 => Append,
            3 => Read,
            4 => Seal,
            5 => Delete,
            6 => Stat,
            7 => List,
            8 => NodeStat,
            9 => Fence,
            10 => Records,
            11 => Rebuild,
            _ => return None,
        })
    }
}

/// "Let the datanode choose the device" in [`Request::Create`].
pub const ANY_DEVICE: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Create {
        extent: ExtentId,
        epoch: Epoch,
        device: u32,
    },
    Append {
        extent: ExtentId,
        expected_offset: u64,
        epoch: Epoch,
        crc32c: u32,
        payload: Bytes,
    },
    Read {
        extent: ExtentId,
        offset: u64,
        len: u32,
    },
    Seal {
        extent: ExtentId,
        length: u64,
    },
    Delete {
        extent: ExtentId,
    },
    Stat {
        extent: ExtentId,
    },
    List,
    NodeStat,
    /// Refuse appends older than `epoch` from now on, wait until every append accepted
    /// before the fence is durable, and report the extent with that length. What an
    /// opener does before sealing a dead writer's extent at the smallest length.
    Fence {
        extent: ExtentId,
        epoch: Epoch,
    },
    /// The records of an extent in order, up to its readable length: its appends (for
    /// an erasure-coded extent, its stripes' shards), each with its CRC32C.
    Records {
        extent: ExtentId,
    },
    /// Make this datanode's copy of the sealed `extent` from the copies on other
    /// datanodes (repair): `layout`'s slot `slot`, `length` bytes, created on `device`
    /// (or any) under `epoch`, record by record as the sources hold them, each checked
    /// against its CRC, then sealed and its record index checked. Answers the new
    /// copy's stat.
    Rebuild(Rebuild),
}

/// One record of an extent: its logical offset, length and the CRC32C of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordStat {
    pub offset: u64,
    pub len: u32,
    pub crc: u32,
}

/// What a [`Request::Rebuild`] asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuild {
    pub extent: ExtentId,
    pub epoch: Epoch,
    pub device: u32,
    pub length: u64,
    /// `k` = 0: a replica (every source holds the whole extent); else `ec:k+m`.
    pub k: u8,
    pub m: u8,
    /// The slot (shard index) this copy takes.
    pub slot: u8,
    /// The other copies: (slot, datanode, its address). A source that answers as
    /// another datanode is not used.
    pub sources: Vec<(u8, NodeId, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtentStat {
    pub extent: ExtentId,
    pub epoch: Epoch,
    /// Durable (readable) length in bytes; for a sealed extent, the sealed length.
    pub length: u64,
    pub sealed: bool,
    /// An open extent whose copy here lost bytes in the middle of its record chain
    /// (found by start-up recovery): its length may be short of what was acknowledged.
    pub cut: bool,
    pub device: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceStat {
    pub device: u32,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub extents: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStat {
    pub node: NodeId,
    pub devices: Vec<DeviceStat>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Create, Seal and Delete.
    Done,
    /// Append: the extent's length after this append.
    Appended {
        length: u64,
    },
    Data(Bytes),
    Stat(ExtentStat),
    List(Vec<ExtentStat>),
    NodeStat(NodeStat),
    Records(Vec<RecordStat>),
}

const STAT_BYTES: usize = 29;
/// Bytes of one record of a records answer.
const RECORD_BYTES: usize = 16;

/// Bytes of an append body before its payload: extent, expected offset, epoch, crc32c.
pub const APPEND_FIXED_BYTES: usize = 28;

/// The fixed fields of an append body: (extent, expected_offset, epoch, crc32c).
pub fn decode_append_fixed(b: &[u8; APPEND_FIXED_BYTES]) -> (ExtentId, u64, Epoch, u32) {
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
    (ExtentId(u64_at(0)), u64_at(8), Epoch(u64_at(16)), u32::from_le_bytes(b[24..28].try_into().expect("4")))
}

impl Request {
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Create { .. } => Opcode::Create,
            Request::Append { .. } => Opcode::Append,
            Request::Read { .. } => Opcode::Read,
            Request::Seal { .. } => Opcode::Seal,
            Request::Delete { .. } => Opcode::Delete,
            Request::Stat { .. } => Opcode::Stat,
            Request::List => Opcode::List,
            Request::NodeStat => Opcode::NodeStat,
            Request::Fence { .. } => Opcode::Fence,
            Request::Records { .. } => Opcode::Records,
            Request::Rebuild(_) => Opcode::Rebuild,
        }
    }

    /// Header plus fixed fields, and the payload to send after them.
    pub fn encode(&self, request_id: u64) -> (BytesMut, Option<Bytes>) {
        let mut fixed = BytesMut::with_capacity(64);
        let mut tail = None;
        match self {
            Request::Create { extent, epoch, device } => {
                fixed.put_u64_le(extent.0);
                fixed.put_u64_le(epoch.0);
                fixed.put_u32_le(*device);
            }
            Request::Append { extent, expected_offset, epoch, crc32c, payload } => {
                fixed.put_u64_le(extent.0);
                fixed.put_u64_le(*expected_offset);
                fixed.put_u64_le(epoch.0);
                fixed.put_u32_le(*crc32c);
                tail = Some(payload.clone());
            }
            Request::Read { extent, offset, len } => {
                fixed.put_u64_le(extent.0);
                fixed.put_u64_le(*offset);
                fixed.put_u32_le(*len);
            }
            Request::Seal { extent, length } => {
                fixed.put_u64_le(extent.0);
                fixed.put_u64_le(*length);
            }
            Request::Delete { extent } | Request::Stat { extent } | Request::Records { extent } => {
                fixed.put_u64_le(extent.0)
            }
            Request::Rebuild(r) => {
                fixed.put_u64_le(r.extent.0);
                fixed.put_u64_le(r.epoch.0);
                fixed.put_u32_le(r.device);
                fixed.put_u64_le(r.length);
                fixed.put_u8(r.k);
                fixed.put_u8(r.m);
                fixed.put_u8(r.slot);
                fixed.put_u8(r.sources.len() as u8);
                for (slot, node, addr) in &r.sources {
                    fixed.put_u8(*slot);
                    fixed.put_u64_le(node.0);
                    fixed.put_u16_le(addr.len() as u16);
                    fixed.extend_from_slice(addr.as_bytes());
                }
            }
            Request::Fence { extent, epoch } => {
                fixed.put_u64_le(extent.0);
                fixed.put_u64_le(epoch.0);
            }
            Request::List | Request::NodeStat => {}
        }
        let body_len = fixed.len() + tail.as_ref().map_or(0, |t| t.len());
        (frame(self.opcode() as u8, request_id, body_len, fixed), tail)
    }

    pub fn decode(opcode: u8, body: Bytes) -> Result<Request, ExtentError> {
        let op = Opcode::from_u8(opcode).ok_or_else(|| ExtentError::Malformed(format!("unknown opcode {opcode}")))?;
        let mut c = Cursor::new(&body);
        let req = match op {
            Opcode::Create => Request::Create { extent: ExtentId(c.u64()?), epoch: Epoch(c.u64()?), device: c.u32()? },
            Opcode::Append => {
                let (extent, expected_offset, epoch, crc32c) =
                    (ExtentId(c.u64()?), c.u64()?, Epoch(c.u64()?), c.u32()?);
                let payload = body.slice(c.pos()..);
                return Ok(Request::Append { extent, expected_offset, epoch, crc32c, payload });
            }
            Opcode::Read => Request::Read { extent: ExtentId(c.u64()?), offset: c.u64()?, len: c.u32()? },
            Opcode::Seal => Request::Seal { extent: ExtentId(c.u64()?), length: c.u64()? },
            Opcode::Delete => Request::Delete { extent: ExtentId(c.u64()?) },
            Opcode::Stat => Request::Stat { extent: ExtentId(c.u64()?) },
            Opcode::List => Request::List,
            Opcode::NodeStat => Request::NodeStat,
            Opcode::Fence => Request::Fence { extent: ExtentId(c.u64()?), epoch: Epoch(c.u64()?) },
            Opcode::Records => Request::Records { extent: ExtentId(c.u64()?) },
            Opcode::Rebuild => {
                let (extent, epoch, device, length) = (ExtentId(c.u64()?), Epoch(c.u64()?), c.u32()?, c.u64()?);
                let (k, m, slot, n) = (c.u8()?, c.u8()?, c.u8()?, c.u8()?);
                let mut sources = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let (slot, node) = (c.u8()?, NodeId(c.u64()?));
                    let len = c.u16()? as usize;
                    let addr = std::str::from_utf8(c.bytes(len)?)
                        .map_err(|_| ExtentError::Malformed("a source address is not UTF-8".into()))?;
                    sources.push((slot, node, addr.to_string()));
                }
                Request::Rebuild(Rebuild { extent, epoch, device, length, k, m, slot, sources })
            }
        };
        c.finish()?;
        Ok(req)
    }
}

fn frame(opcode: u8, request_id: u64, body_len: usize, fixed: BytesMut) -> BytesMut {
    let mut out = BytesMut::with_capacity(HEADER_BYTES + fixed.len());
    FrameHeader { opcode, request_id, body_len: body_len as u32 }.encode(&mut out);
    out.extend_from_slice(&fixed);
    out
}

fn put_stat(out: &mut BytesMut, s: &ExtentStat) {
    out.put_u64_le(s.extent.0);
    out.put_u64_le(s.epoch.0);
    out.put_u64_le(s.length);
    out.put_u8(s.sealed as u8 | (s.cut as u8) << 1);
    out.put_u32_le(s.device);
}

fn get_stat(c: &mut Cursor<'_>) -> Result<ExtentStat, ExtentError> {
    let (extent, epoch, length, flags) = (ExtentId(c.u64()?), Epoch(c.u64()?), c.u64()?, c.u8()?);
    Ok(ExtentStat { extent, epoch, length, sealed: flags & 1 != 0, cut: flags & 2 != 0, device: c.u32()? })
}

/// Encodes a response (or a refusal) to the request `opcode`/`request_id`.
pub fn encode_response(
    opcode: u8,
    request_id: u64,
    result: &Result<Response, ExtentError>,
) -> (BytesMut, Option<Bytes>) {
    let mut fixed = BytesMut::with_capacity(64);
    let mut tail = None;
    match result {
        Err(e) => {
            let (code, a, b, msg) = e.to_wire();
            fixed.put_u8(1);
            fixed.put_u16_le(code);
            fixed.put_u64_le(a);
            fixed.put_u64_le(b);
            fixed.put_u32_le(msg.len() as u32);
            fixed.extend_from_slice(msg.as_bytes());
        }
        Ok(r) => {
            fixed.put_u8(0);
            match r {
                Response::Done => {}
                Response::Appended { length } => fixed.put_u64_le(*length),
                Response::Data(d) => tail = Some(d.clone()),
                Response::Stat(s) => put_stat(&mut fixed, s),
                Response::List(v) => {
                    fixed.reserve(4 + v.len() * STAT_BYTES);
                    fixed.put_u32_le(v.len() as u32);
                    v.iter().for_each(|s| put_stat(&mut fixed, s));
                }
                Response::Records(v) => {
                    fixed.reserve(4 + v.len() * RECORD_BYTES);
                    fixed.put_u32_le(v.len() as u32);
                    for r in v {
                        fixed.put_u64_le(r.offset);
                        fixed.put_u32_le(r.len);
                        fixed.put_u32_le(r.crc);
                    }
                }
                Response::NodeStat(n) => {
                    fixed.put_u64_le(n.node.0);
                    fixed.put_u32_le(n.devices.len() as u32);
                    for d in &n.devices {
                        fixed.put_u32_le(d.device);
                        fixed.put_u64_le(d.capacity_bytes);
                        fixed.put_u64_le(d.used_bytes);
                        fixed.put_u32_le(d.extents);
                    }
                }
            }
        }
    }
    let body_len = fixed.len() + tail.as_ref().map_or(0, |t| t.len());
    (frame(opcode | RESPONSE_BIT, request_id, body_len, fixed), tail)
}

/// Decodes a response body; `opcode` is the request's opcode (without the response bit).
pub fn decode_response(opcode: u8, body: Bytes) -> Result<Result<Response, ExtentError>, ExtentError> {
    let mut c = Cursor::new(&body);
    // Refusals decode the same whatever the opcode (a connection-level refusal carries 0).
    if c.u8()? != 0 {
        let (code, a, b) = (c.u16()?, c.u64()?, c.u64()?);
        let n = c.u32()? as usize;
        let msg = String::from_utf8_lossy(c.bytes(n)?).into_owned();
        c.finish()?;
        return Ok(Err(ExtentError::from_wire(code, a, b, msg)));
    }
    let op =
        Opcode::from_u8(opcode).ok_or_else(|| ExtentError::Malformed(format!("unknown response opcode {opcode}")))?;
    let r = match op {
        Opcode::Create | Opcode::Seal | Opcode::Delete => Response::Done,
        Opcode::Append => Response::Appended { length: c.u64()? },
        Opcode::Read => return Ok(Ok(Response::Data(body.slice(1..)))),
        Opcode::Stat | Opcode::Fence | Opcode::Rebuild => Response::Stat(get_stat(&mut c)?),
        Opcode::Records => {
            let n = c.u32()? as usize;
            if n > body.len() / RECORD_BYTES {
                return Err(ExtentError::Malformed(format!("records claims {n} entries")));
            }
            let rec = |c: &mut Cursor<'_>| Ok(RecordStat { offset: c.u64()?, len: c.u32()?, crc: c.u32()? });
            Response::Records((0..n).map(|_| rec(&mut c)).collect::<Result<_, ExtentError>>()?)
        }
        Opcode::List => {
            let n = c.u32()? as usize;
            if n > body.len() / STAT_BYTES {
                return Err(ExtentError::Malformed(format!("list claims {n} entries")));
            }
            Response::List((0..n).map(|_| get_stat(&mut c)).collect::<Result<_, _>>()?)
        }
        Opcode::NodeStat => {
            let node = NodeId(c.u64()?);
            let n = c.u32()? as usize;
            if n > body.len() / 24 {
                return Err(ExtentError::Malformed(format!("node stat claims {n} devices")));
            }
            let mut devices = Vec::with_capacity(n);
            for _ in 0..n {
                devices.push(DeviceStat {
                    device: c.u32()?,
                    capacity_bytes: c.u64()?,
                    used_bytes: c.u64()?,
                    extents: c.u32()?,
                });
            }
            Response::NodeStat(NodeStat { node, devices })
        }
    };
    c.finish()?;
    Ok(Ok(r))
}
