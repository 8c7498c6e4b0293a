//! gc: reclaims space from deleted objects, sparse sealed extents and stale uploads.
//!
//! Not built yet (it needs the ogw's slice table). This crate holds no code on purpose.
