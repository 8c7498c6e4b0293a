//! Ids as newtypes over `u64`, so that an extent id cannot be passed where a node id,
//! a stream id, an epoch, an offset or a length is meant. Each one is a bare number on
//! every wire and disk format (binary frames, JSON, postcard, SQL, xattrs) and prints as
//! one, both with `{}` and `{:?}`, so messages and CLI output read as before.

use std::fmt;
use std::num::ParseIntError;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The one after this one (counters, epoch bumps).
            pub fn next(self) -> $name {
                $name(self.0 + 1)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = ParseIntError;
            fn from_str(s: &str) -> Result<$name, ParseIntError> {
                s.parse().map($name)
            }
        }
    };
}

id! {
    /// Globally unique extent id, assigned by the metanode (or the caller in tests).
    ExtentId
}
id! {
    /// Writer epoch: a stream's writer lease number. Datanodes refuse older ones.
    Epoch
}
id! {
    /// Cluster-wide datanode id.
    NodeId
}
id! {
    /// Cluster-wide LogStream id, assigned by the metanode.
    StreamId
}
