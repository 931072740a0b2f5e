//! Start-up: initializing the collector on the main thread, and learning
//! which `pthread_create` calls come from libgc itself.
//!
//! libgc calls the plain `pthread_create`, so the shim's hook also receives
//! libgc's own calls: the one inside `GC_pthread_create` (whose start routine,
//! libgc's `GC_start_routine`, registers the thread itself) and the creation
//! of parallel-marker threads (made with libgc's allocation lock held; those
//! threads must never be registered). Neither start routine is exported, so
//! the shim watches for them during initialization: `GC_allow_register_threads`
//! starts the markers, and one probe call to `GC_pthread_create` shows the
//! other (the hook then declines to create the thread: a thread's start-up
//! and exit cost ~0.15 ms, a tenth of a hello-world's run). Later calls with
//! those start routines are libgc's own.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::sys::gc;
use crate::{large, real, scan, signals, small, stats, threads, tls};

const UNINITIALIZED: u8 = 0;
const INITIALIZING: u8 = 1;
const READY: u8 = 2;
/// No usable libgc in this process: every hook passes straight to libc.
const DISABLED: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(UNINITIALIZED);

/// Which libgc start routine a `pthread_create` call made under the shim's
/// bypass flag belongs to, while initialization watches for them.
const LEARN_NOTHING: u8 = 0;
const LEARN_MARKER: u8 = 1;
const LEARN_GC_START: u8 = 2;
static LEARNING: AtomicU8 = AtomicU8::new(LEARN_NOTHING);
static MARKER_START: AtomicUsize = AtomicUsize::new(0);
static GC_START: AtomicUsize = AtomicUsize::new(0);

/// Who a thread start routine belongs to.
#[derive(PartialEq, Eq)]
pub enum StartRoutineOwner {
    /// libgc's parallel marker: never registered, created under libgc's lock.
    LibgcMarker,
    /// libgc's `GC_start_routine`: registers the thread by itself.
    LibgcThread,
    /// Anyone else's: the shim registers the thread.
    Other,
}

/// True once the collector is initialized and the hooks route through it.
#[inline(always)]
pub fn is_ready() -> bool {
    STATE.load(Ordering::Acquire) == READY
}

pub fn is_uninitialized() -> bool {
    STATE.load(Ordering::Acquire) == UNINITIALIZED
}

pub fn owner_of(start: usize) -> StartRoutineOwner {
    if start != 0 && start == MARKER_START.load(Ordering::Relaxed) {
        StartRoutineOwner::LibgcMarker
    } else if start != 0 && start == GC_START.load(Ordering::Relaxed) {
        StartRoutineOwner::LibgcThread
    } else {
        StartRoutineOwner::Other
    }
}

/// Called by the `pthread_create` hook for calls made while the shim itself
/// is inside libgc: remembers libgc's start routines during initialization.
/// Returns true for the probe's call, which must create no thread
/// ([`probe_gc_pthread_create`]).
pub fn observe_libgc_start_routine(start: usize) -> bool {
    match LEARNING.load(Ordering::Relaxed) {
        LEARN_MARKER => {
            MARKER_START.store(start, Ordering::Relaxed);
            false
        }
        LEARN_GC_START if start != MARKER_START.load(Ordering::Relaxed) => {
            GC_START.store(start, Ordering::Relaxed);
            true
        }
        _ => false,
    }
}

/// The main thread's stack end as glibc recorded it at start-up.
fn stack_end() -> *mut c_void {
    // SAFETY: a pointer-sized variable the loader set before any code ran
    // and never changes afterwards.
    unsafe { crate::sys::glibc::__libc_stack_end }
}

/// Whether the calling thread is the process's main thread.
pub fn on_main_thread() -> bool {
    // SAFETY: plain system calls without arguments.
    unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t == libc::getpid() }
}

/// Initializes the collector and the shim, once. Must run on the main thread
/// (the thread that runs `GC_init` becomes the collector's main thread).
pub fn initialize() {
    if STATE
        .compare_exchange(
            UNINITIALIZED,
            INITIALIZING,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        return;
    }
    real::resolve_all();
    stats::read_environment();
    if !crate::sys::libgc_is_linked() {
        STATE.store(DISABLED, Ordering::Release);
        return;
    }
    let me = tls::current();
    me.bypassing(|| {
        if !gc::is_init_called() {
            // Needed for fork() in multi-threaded programs; must precede GC_init.
            gc::set_handle_fork(1);
            if on_main_thread() {
                // Where the main stack's frames begin, from glibc: what libgc
                // itself uses without threads. With threads it would ask
                // pthread_getattr_np, which reads and parses /proc/self/maps
                // (0.05-0.1 ms, a tenth of a small program's run), for the
                // end of the stack mapping: a few KiB higher, past the
                // argument and environment strings, which hold no GC pointers.
                gc::set_stackbottom_if_unset(stack_end());
            }
        }
        gc::init();
        LEARNING.store(LEARN_MARKER, Ordering::Relaxed);
        gc::allow_register_threads();
        LEARNING.store(LEARN_GC_START, Ordering::Relaxed);
        if gc::has_pthread_create() {
            probe_gc_pthread_create();
        }
        LEARNING.store(LEARN_NOTHING, Ordering::Relaxed);
    });
    // The regions are scanned through libgc's hook, or not used at all.
    if scan::install_hook() {
        small::reserve_region();
        large::reserve_region();
    }
    register_fork_handlers();
    signals::set_collector_signals(gc::suspend_signal(), gc::restart_signal());
    threads::create_exit_key();
    signals::unblock_collector_signals();
    STATE.store(READY, Ordering::Release);
}

/// The region allocators' locks must not be held across `fork`.
/// Registered after GC_init, so these prepare handlers run before libgc's
/// (which take its lock) and the child handlers after libgc's.
fn register_fork_handlers() {
    extern "C" fn prepare() {
        small::lock_all_for_fork();
        large::lock_all_for_fork();
    }
    extern "C" fn after() {
        large::unlock_all_after_fork();
        small::unlock_all_after_fork();
    }
    // SAFETY: three valid handlers with the C ABI and no arguments.
    unsafe { libc::pthread_atfork(Some(prepare), Some(after), Some(after)) };
}

/// Calls `GC_pthread_create` once, so that the `pthread_create` hook sees
/// libgc's start routine. The hook refuses that creation (EAGAIN): libgc's
/// wrapper then returns the error after freeing what it set up (8.2 and 8.3
/// keep the thread's start information on their stack), and no thread is
/// started or joined.
fn probe_gc_pthread_create() {
    unsafe extern "C-unwind" fn probe_thread(_: *mut c_void) -> *mut c_void {
        ptr::null_mut()
    }
    let mut thread: libc::pthread_t = 0;
    // SAFETY: `thread` is a valid out-pointer and `probe_thread` a valid
    // start routine that ignores its argument.
    if unsafe { gc::pthread_create(&mut thread, probe_thread, ptr::null_mut()) } == 0 {
        // A libgc that did not route the creation through the hook.
        gc::pthread_join(thread);
    }
}

/// The library constructor: the collector is set up before `main` and before
/// the constructors of libraries loaded after the shim.
extern "C" fn run_constructor() {
    initialize();
}

#[used]
#[link_section = ".init_array.00101"]
static CONSTRUCTOR: extern "C" fn() = run_constructor;

extern "C" fn run_destructor() {
    stats::print_summary_if_asked();
}

#[used]
#[link_section = ".fini_array.00101"]
static DESTRUCTOR: extern "C" fn() = run_destructor;
