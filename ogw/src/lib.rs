//! ogw: the stateless S3 gateway (axum, SigV4, object metadata in SQL through sqlx).
//!
//! Not built yet (issue 5). This crate holds no code on purpose.
