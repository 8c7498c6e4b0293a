//! ogw: the stateless S3 gateway. The S3 protocol (routing, SigV4, aws-chunked bodies,
//! XML, errors) comes from `s3s`; this crate keeps tenants, buckets, objects and
//! multipart uploads in SQL (`db`, `catalog`) and object bytes as slices in LogStreams
//! (`data`), and can run a whole cluster in one process (`standalone`).

pub mod acl;
pub mod admin;
mod body;
pub mod catalog;
pub mod checksum;
pub mod class;
pub mod console;
pub mod cors;
pub mod data;
pub mod db;
pub mod lifecycle;
pub mod limits;
pub mod lock;
pub mod md5lanes;
pub mod metrics;
pub mod policy;
pub mod s3;
pub mod secrets;
pub mod server;
pub mod sse;
pub mod standalone;
pub use proto::tls;
