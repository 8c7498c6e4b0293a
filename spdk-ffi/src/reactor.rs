//! SPDK's environment and the one SPDK thread everything runs on.

use std::ffi::{c_void, CString};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

/// A pointer dereferenced only inside a poll of the SPDK thread (by messages and
/// completions; see [`Poller`]). Threads carry it into messages, never touch it.
pub(crate) struct Ptr<T>(pub(crate) *mut T);
// SAFETY: see above; the pointee is only used inside a poll, one thread at a time.
unsafe impl<T> Send for Ptr<T> {}
// SAFETY: as for Send: shared references never dereference it outside a poll.
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

/// SPDK's environment and one SPDK thread, polled by waiting callers and by a dedicated
/// reactor thread (see [`Poller`]) until the reactor stops or is dropped. The
/// environment can be started once per process.
pub struct Reactor {
    thread: Ptr<sys::spdk_thread>,
    poller: Arc<Poller>,
    /// The reactor thread, to unpark.
    os_thread: std::thread::Thread,
    join: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

/// Who polls the SPDK thread. **Invariant**: one OS thread at a time, the one holding
/// `token`, and only inside `spdk_thread_poll` (which makes the SPDK thread current for
/// its duration); nobody once `stop` is set. Every SPDK object is touched only there,
/// by messages and completions. A caller waiting for its answer polls itself while it
/// can take the token (run to completion: its message, its I/O's submission and its
/// completion on its own thread, with no wake-up in between); the reactor thread polls
/// whenever no caller does.
struct Poller {
    token: parking_lot::Mutex<()>,
    /// Callers polling (or about to): the reactor thread leaves the SPDK thread to them.
    callers: AtomicUsize,
    /// Callers that stopped polling and block for their answer: the reactor thread
    /// polls for them (and parks for long only while there are none).
    blocked: AtomicUsize,
    stop: AtomicBool,
}

impl Poller {
    /// One poll, unless another thread holds the token or the reactor stopped: whether
    /// it did any work.
    fn poll_once(&self, thread: Ptr<sys::spdk_thread>) -> Option<bool> {
        let _token = self.token.try_lock()?;
        if self.stop.load(Ordering::Acquire) {
            return None;
        }
        // SAFETY: the token makes this the only thread polling the SPDK thread.
        Some(unsafe { sys::spdk_thread_poll(thread.get(), 0, 0) } > 0)
    }
}

/// Idle polls before the reactor thread sleeps between polls.
const IDLE_SPINS: u32 = 64;
/// Sleep between the reactor thread's polls once idle while a caller blocks for its
/// answer. Callers poll for their own answers, so this bounds only how late the
/// reactor thread sees what completes after a caller stopped polling (an I/O longer
/// than [`CALLER_POLL`]); longer sleeps leave more of the CPU to the datanode's other
/// threads (on 2 cores, 10 µs sleeps held 4 KiB appends to 0.6 of the portable
/// backend, 200 µs ones gave 0.95). Its timer slack is set to 1 ns, so it sleeps this
/// long, not up to 50 µs more (Linux's default slack).
const IDLE_SLEEP: Duration = Duration::from_micros(200);
/// How long the reactor thread parks while no caller waits for it.
const IDLE_PARK: Duration = Duration::from_millis(10);
/// How long a caller polls for its answer before it blocks and leaves the polling to
/// the reactor thread: a small write's whole round trip on an SSD, while a long one
/// does not keep a core spinning.
const CALLER_POLL: Duration = Duration::from_micros(300);
/// Empty polls a waiting caller makes before it yields the core between polls.
const CALLER_SPINS: u32 = 16;

static STARTED: AtomicBool = AtomicBool::new(false);

impl Reactor {
    /// Starts the environment, the SPDK thread and every linked subsystem (bdev, accel,
    /// iobuf, ...).
    pub fn start(opts: &EnvOptions) -> Result<Arc<Reactor>, SpdkError> {
        if STARTED.swap(true, Ordering::SeqCst) {
            return Err(SpdkError::Other("SPDK's environment is already started in this process".into()));
        }
        let (tx, rx) = sync_channel::<Result<Ptr<sys::spdk_thread>, SpdkError>>(1);
        let poller = Arc::new(Poller {
            token: parking_lot::Mutex::new(()),
            callers: AtomicUsize::new(0),
            blocked: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let poller2 = poller.clone();
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
                poll(thread, &poller2);
            })
            .map_err(|e| SpdkError::Other(format!("starting the reactor thread: {e}")))?;
        let thread = rx.recv().map_err(|_| SpdkError::Other("the reactor thread died while starting".into()))??;
        let os_thread = join.thread().clone();
        Ok(Arc::new(Reactor { thread, poller, os_thread, join: parking_lot::Mutex::new(Some(join)) }))
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
        self.wait(&rx)
    }

    /// Waits for what a message or completion sends on `rx`: polls the SPDK thread
    /// itself for up to [`CALLER_POLL`] while no other thread does, then blocks.
    pub(crate) fn wait<T>(&self, rx: &Receiver<T>) -> T {
        let p = &self.poller;
        p.callers.fetch_add(1, Ordering::AcqRel);
        let start = Instant::now();
        let mut idle = 0u32;
        let got = loop {
            match rx.try_recv() {
                Ok(v) => break Some(v),
                Err(TryRecvError::Disconnected) => panic!("every message is answered"),
                Err(TryRecvError::Empty) => {}
            }
            if start.elapsed() > CALLER_POLL || p.stop.load(Ordering::Acquire) {
                break None;
            }
            match p.poll_once(self.thread) {
                Some(true) => idle = 0,
                // Nothing yet (an I/O in flight): past a few empty polls, the core goes
                // to any other runnable thread between polls (on 2 cores, the datanode's
                // network threads receiving the next payloads).
                Some(false) => {
                    idle += 1;
                    if idle > CALLER_SPINS {
                        std::thread::yield_now();
                    }
                }
                // Another caller polls, and runs what answers this one too.
                None => std::hint::spin_loop(),
            }
        };
        p.callers.fetch_sub(1, Ordering::AcqRel);
        got.unwrap_or_else(|| {
            // Counted before the unpark, which the reactor thread cannot miss: an unpark
            // before it parks makes that park return at once.
            p.blocked.fetch_add(1, Ordering::AcqRel);
            self.os_thread.unpark();
            let v = rx.recv().expect("every message is answered");
            p.blocked.fetch_sub(1, Ordering::AcqRel);
            v
        })
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

/// The reactor thread: polls the SPDK thread until `stop` whenever no caller does;
/// spins while busy, sleeps briefly once idle.
fn poll(thread: Ptr<sys::spdk_thread>, p: &Poller) {
    // SAFETY: plain prctl on this thread: sleeps end when asked, not up to 50 µs later.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64) };
    let mut idle = 0u32;
    while !p.stop.load(Ordering::Acquire) {
        let busy = match p.callers.load(Ordering::Acquire) {
            0 => p.poll_once(thread).unwrap_or(false),
            _ => false, // a caller polls
        };
        if busy {
            idle = 0;
        } else if idle < IDLE_SPINS {
            idle += 1;
            std::hint::spin_loop();
        } else if p.blocked.load(Ordering::Acquire) > 0 {
            std::thread::sleep(IDLE_SLEEP);
        } else {
            // Nobody waits on this thread: callers poll for themselves, and one that
            // stops polling unparks it. Only SPDK's own timed pollers wait meanwhile.
            std::thread::park_timeout(IDLE_PARK);
        }
    }
}

impl Reactor {
    /// Stops polling and waits for the reactor thread: call once nothing is in flight,
    /// before the process exits (exit handlers must not run under a polling reactor).
    /// Messages sent after this are never answered. The environment cannot be started
    /// again in this process.
    pub fn stop(&self) {
        self.poller.stop.store(true, Ordering::Release);
        self.os_thread.unpark();
        // A poll under way ends before this returns: it holds the token.
        drop(self.poller.token.lock());
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
