//! SPDK's environment and the one SPDK thread everything runs on.

use std::ffi::{c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{sys, SpdkError};

/// How SPDK's environment starts.
#[derive(Debug, Clone)]
pub struct EnvOptions {
    /// Process name for DPDK (its runtime files are per process: `spdk_pid<pid>`).
    pub name: String,
    /// Run without hugepages (`no_huge`), on ordinary memory of `mem_size_mb`.
    pub no_huge: bool,
    /// Memory DPDK reserves, MiB (about 1024 without hugepages).
    pub mem_size_mb: u32,
    /// Leave PCI alone (true for AIO, io_uring and malloc bdevs).
    pub no_pci: bool,
}

impl Default for EnvOptions {
    fn default() -> EnvOptions {
        EnvOptions { name: "strata".into(), no_huge: true, mem_size_mb: 1024, no_pci: true }
    }
}

/// A pointer that only the reactor thread dereferences (SPDK objects are used on the
/// thread that made them). Other threads carry it into messages, never touch it.
pub(crate) struct Ptr<T>(pub(crate) *mut T);
// SAFETY: see above; the pointee is only used on the reactor thread.
unsafe impl<T> Send for Ptr<T> {}
// SAFETY: as for Send: shared references never dereference it off the reactor.
unsafe impl<T> Sync for Ptr<T> {}
impl<T> Clone for Ptr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Ptr<T> {}
impl<T> Ptr<T> {
    /// The pointer (a method, so closures capture the whole `Ptr`, which is `Send`).
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

/// The answer to a message: handed to a completion callback as its `cb_arg`.
pub(crate) struct Done<T>(SyncSender<T>);

impl<T> Done<T> {
    pub(crate) fn into_raw(self) -> *mut c_void {
        Box::into_raw(Box::new(self)) as *mut c_void
    }
    /// # Safety
    /// `p` came from [`Done::into_raw`] with the same `T`, and is used once.
    pub(crate) unsafe fn from_raw(p: *mut c_void) -> Done<T> {
        *Box::from_raw(p as *mut Done<T>)
    }
    pub(crate) fn send(self, v: T) {
        let _ = self.0.send(v);
    }
}

/// `cb(cb_arg, errno)` completions (`spdk_blob_op_complete`, `spdk_bs_op_complete`).
pub(crate) unsafe extern "C" fn done_errno(arg: *mut c_void, rc: i32) {
    Done::<i32>::from_raw(arg).send(rc)
}

/// `spdk_subsystem_init_fn(rc, ctx)`.
unsafe extern "C" fn done_rc_first(rc: i32, arg: *mut c_void) {
    Done::<i32>::from_raw(arg).send(rc)
}

type Msg = Box<dyn FnOnce() + Send>;

unsafe extern "C" fn run_msg(arg: *mut c_void) {
    let f = *Box::from_raw(arg as *mut Msg);
    f()
}

/// SPDK's environment and one SPDK thread, polled by a dedicated OS thread until the
/// reactor is dropped. The environment can be started once per process.
pub struct Reactor {
    thread: Ptr<sys::spdk_thread>,
    stop: Arc<AtomicBool>,
    join: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

/// Idle polls before the reactor sleeps between polls.
const IDLE_SPINS: u32 = 256;
/// Sleep between polls once idle (bounds the latency a message waits).
const IDLE_SLEEP: Duration = Duration::from_micros(50);

static STARTED: AtomicBool = AtomicBool::new(false);

impl Reactor {
    /// Starts the environment, the SPDK thread and every linked subsystem (bdev, accel,
    /// iobuf, ...).
    pub fn start(opts: &EnvOptions) -> Result<Arc<Reactor>, SpdkError> {
        if STARTED.swap(true, Ordering::SeqCst) {
            return Err(SpdkError::Other("SPDK's environment is already started in this process".into()));
        }
        let (tx, rx) = sync_channel::<Result<Ptr<sys::spdk_thread>, SpdkError>>(1);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let opts = opts.clone();
        let join = std::thread::Builder::new()
            .name("spdk-reactor".into())
            .spawn(move || {
                let thread = match init(&opts) {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                // Subsystems initialize asynchronously on this thread: poll until done.
                let (itx, irx) = sync_channel::<i32>(1);
                // SAFETY: on the SPDK thread; the callback gets its Done back once.
                unsafe { sys::spdk_subsystem_init(Some(done_rc_first), Done(itx).into_raw()) };
                let rc = loop {
                    // SAFETY: the thread made and set current in `init`.
                    unsafe { sys::spdk_thread_poll(thread.get(), 0, 0) };
                    if let Ok(rc) = irx.try_recv() {
                        break rc;
                    }
                };
                if rc != 0 {
                    let _ = tx.send(Err(SpdkError::Call { call: "spdk_subsystem_init", errno: rc.abs() }));
                    return;
                }
                // Subsystems are up: run-time methods (bdev_*_create) may be loaded now.
                // SAFETY: on the SPDK thread.
                unsafe { sys::spdk_rpc_set_state(sys::SPDK_RPC_RUNTIME) };
                let _ = tx.send(Ok(thread));
                poll(thread, &stop2);
            })
            .map_err(|e| SpdkError::Other(format!("starting the reactor thread: {e}")))?;
        let thread = rx.recv().map_err(|_| SpdkError::Other("the reactor thread died while starting".into()))??;
        Ok(Arc::new(Reactor { thread, stop, join: parking_lot::Mutex::new(Some(join)) }))
    }

    /// Runs `f` on the SPDK thread and waits for what it (or a completion it arranged)
    /// sends through its `Done`.
    pub(crate) fn call<T: Send + 'static>(&self, f: impl FnOnce(Done<T>) + Send + 'static) -> T {
        let (tx, rx) = sync_channel(1);
        let msg: Msg = Box::new(move || f(Done(tx)));
        let arg = Box::into_raw(Box::new(msg)) as *mut c_void;
        // SAFETY: spdk_thread_send_msg may be called from any thread; `run_msg` takes
        // `arg` back exactly once on the SPDK thread.
        let rc = unsafe { sys::spdk_thread_send_msg(self.thread.get(), Some(run_msg), arg) };
        assert_eq!(rc, 0, "spdk_thread_send_msg failed: {rc}");
        rx.recv().expect("every message is answered")
    }

    /// Loads a JSON configuration of subsystems (`{"subsystems": [{"subsystem": "bdev",
    /// "config": [{"method": "bdev_aio_create", "params": {...}}]}]}`), e.g. the bdevs.
    pub fn load_config(&self, json: &str) -> Result<(), SpdkError> {
        let json = CString::new(json).map_err(|_| SpdkError::Other("NUL in the configuration".into()))?;
        let rc = self.call(move |done: Done<i32>| {
            let bytes = json.as_bytes();
            // SAFETY: on the SPDK thread; SPDK copies the JSON before returning.
            unsafe {
                sys::spdk_subsystem_load_config(
                    bytes.as_ptr() as *mut c_void,
                    bytes.len() as isize,
                    Some(done_rc_first),
                    done.into_raw(),
                    true,
                )
            }
        });
        SpdkError::check("loading the SPDK configuration", rc)
    }
}

fn init(opts: &EnvOptions) -> Result<Ptr<sys::spdk_thread>, SpdkError> {
    let name = CString::new(opts.name.clone()).expect("no NUL in the name");
    // SAFETY: a zeroed spdk_env_opts with its size set is what spdk_env_opts_init fills.
    unsafe {
        let mut o: sys::spdk_env_opts = std::mem::zeroed();
        o.opts_size = std::mem::size_of::<sys::spdk_env_opts>();
        sys::spdk_env_opts_init(&mut o);
        o.name = name.as_ptr();
        o.no_huge = opts.no_huge;
        o.mem_size = opts.mem_size_mb as i32;
        o.no_pci = opts.no_pci;
        o.shm_id = -1;
        // SPDK's own notices and errors go to stderr (the datanode's log).
        sys::spdk_log_set_print_level(sys::spdk_log_level_SPDK_LOG_NOTICE);
        SpdkError::check("spdk_env_init", sys::spdk_env_init(&o))?;
        SpdkError::check("spdk_thread_lib_init", sys::spdk_thread_lib_init(None, 0))?;
        let tname = CString::new("strata").unwrap();
        let t = sys::spdk_thread_create(tname.as_ptr(), std::ptr::null());
        if t.is_null() {
            return Err(SpdkError::Other("spdk_thread_create failed".into()));
        }
        sys::spdk_set_thread(t);
        Ok(Ptr(t))
    }
}

/// Polls the SPDK thread until `stop`; spins while busy, sleeps briefly once idle.
fn poll(thread: Ptr<sys::spdk_thread>, stop: &AtomicBool) {
    let mut idle = 0u32;
    while !stop.load(Ordering::Acquire) {
        // SAFETY: this OS thread owns the SPDK thread.
        let busy = unsafe { sys::spdk_thread_poll(thread.get(), 0, 0) };
        if busy > 0 {
            idle = 0;
        } else if idle < IDLE_SPINS {
            idle += 1;
        } else {
            std::thread::sleep(IDLE_SLEEP);
        }
    }
}

impl Reactor {
    /// Stops polling and waits for the reactor thread: call once nothing is in flight,
    /// before the process exits (exit handlers must not run under a polling reactor).
    /// Messages sent after this are never answered. The environment cannot be started
    /// again in this process.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(j) = self.join.lock().take() {
            let _ = j.join();
        }
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        self.stop();
    }
}
