//! Datanodes served in this process (`ogw standalone`), called without a connection.
//!
//! A datanode client asked for an address registered here calls the datanode directly:
//! a request and its answer pass as values, so the bytes of an append or a read are
//! not copied through the kernel's socket buffers twice (once each way) as they are
//! over loopback TCP. Only the process itself can reach this table: it holds the
//! addresses of datanodes it serves, and the calls carry no credential because they
//! cross no link.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::{ExtentError, Request, Response};

/// Where the answer to a call goes, once it is decided.
pub type Reply = Box<dyn FnOnce(Result<Response, ExtentError>) + Send>;

/// A datanode served in this process.
pub trait LocalDatanode: Send + Sync {
    /// Starts `req` at once, as a connection's reader would on its arrival: appends are
    /// queued to the device in call order; other requests run on their own task. The
    /// answer goes to `reply`.
    fn dispatch(&self, req: Request, reply: Reply);
}

/// Each address's datanode, with the registration that put it there.
type Table = HashMap<String, (u64, Arc<dyn LocalDatanode>)>;

static LOCAL: RwLock<Option<Table>> = RwLock::new(None);
static REGISTRATIONS: AtomicU64 = AtomicU64::new(1);

/// Serves calls for `addr` (as the datanode announces it) with `node` from now on.
/// Returns the registration, which `unregister` takes.
pub fn register(addr: &str, node: Arc<dyn LocalDatanode>) -> u64 {
    let id = REGISTRATIONS.fetch_add(1, Ordering::Relaxed);
    LOCAL.write().get_or_insert_with(HashMap::new).insert(addr.to_string(), (id, node));
    id
}

/// Calls for `addr` go over the network again (its datanode is stopping), unless
/// `addr` was registered again since `registration`.
pub fn unregister(addr: &str, registration: u64) {
    if let Some(m) = LOCAL.write().as_mut() {
        if m.get(addr).is_some_and(|(id, _)| *id == registration) {
            m.remove(addr);
        }
    }
}

/// The datanode this process serves at `addr`, if any.
pub fn get(addr: &str) -> Option<Arc<dyn LocalDatanode>> {
    LOCAL.read().as_ref()?.get(addr).map(|(_, n)| n.clone())
}
