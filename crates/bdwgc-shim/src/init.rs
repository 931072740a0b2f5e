//! Start-up in two steps, so that libgc's initialization stays the
//! program's: every setting libgc documents as "before `GC_INIT`"
//! (`GC_set_all_interior_pointers`, the stop-the-world signals,
//! `GC_set_handle_fork`, the main stack's bottom, ...) is the program's to
//! make, and the shim never calls `GC_init`.
//!
//! 1. **Set-up**, from the shim's constructor, before `main`: binds libc's
//!    functions, places the regions, and installs the collector's
//!    root-pushing hook (`GC_set_push_other_roots` is a plain store into a
//!    variable libgc initializes statically and `GC_init` never resets;
//!    it changes no setting the program makes). From here on malloc is
//!    served from the regions, whose live blocks are scanned from libgc's
//!    very first collection, whenever the program initializes libgc.
//! 2. **Adoption**, when the shim first sees libgc initialized, on a hook
//!    call from a thread libgc knows (normally the thread that called
//!    `GC_INIT`, at its next allocation): sets up the small region's mark
//!    procedure and records the collector's signals. Threads are registered
//!    from then on. Adoption runs only on a registered thread because
//!    `GC_init` marks libgc initialized before it sets up its threads:
//!    another thread could otherwise see it half done.
//! 3. **Threads**, during adoption when other threads are running, else the
//!    first time the shim must register a thread or sees a thread created
//!    after adoption ([`enable_threads`]): allows thread registration
//!    (which starts libgc's parallel markers and makes libgc take its lock
//!    from then on) and learns libgc's thread start routine. Not before: a
//!    program that never starts a thread keeps libgc without markers, as it
//!    would be without the shim (with them, libgc's mark stacks grow:
//!    `disclaim_bench` from bdwgc's tests went from 10 to 46 MiB). libgc's
//!    own `GC_pthread_create` does the same at its first call. It is done
//!    on a thread libgc knows wherever it can be: libgc takes no lock
//!    before it, so another thread doing it races with that one.
//!
//! libgc calls the plain `pthread_create`, so the shim's hook also receives
//! libgc's own calls: the one inside `GC_pthread_create` (whose start
//! routine, libgc's `GC_start_routine`, registers the thread itself) and the
//! creation of parallel-marker threads (made with libgc's allocation lock
//! held; those threads must never be registered). Neither start routine is
//! exported. Markers are known by when they are created: libgc sets its
//! marker count (`GC_get_parallel`) just before creating them, so the first
//! creation that sees it set, with the marker's index as argument, is a
//! marker's. `GC_start_routine` is learnt in step 3 from one probe call to
//! `GC_pthread_create` (the hook then declines to create the thread).

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::sys::gc;
use crate::tls::ThreadState;
use crate::{large, proc_self, real, scan, signals, small, stats, threads, tls};

const UNINITIALIZED: u8 = 0;
const SETTING_UP: u8 = 1;
/// Set up: the regions serve malloc; libgc not taken up yet.
const SERVING: u8 = 2;
const ADOPTING: u8 = 3;
/// libgc taken up: threads are registered.
const READY: u8 = 4;
/// No usable libgc in this process: every hook passes straight to libc.
const DISABLED: u8 = 5;

static STATE: AtomicU8 = AtomicU8::new(UNINITIALIZED);

/// Whether a `pthread_create` call made under the shim's bypass flag is
/// the adoption's probe of `GC_pthread_create`.
static PROBING: AtomicU8 = AtomicU8::new(0);
static MARKER_START: AtomicUsize = AtomicUsize::new(0);
static GC_START: AtomicUsize = AtomicUsize::new(0);
/// How far [`enable_threads`] is.
static THREADS: AtomicU8 = AtomicU8::new(THREADS_OFF);
const THREADS_OFF: u8 = 0;
const THREADS_ENABLING: u8 = 1;
const THREADS_ENABLED: u8 = 2;

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

/// True once libgc is taken up and threads are registered.
#[inline(always)]
pub fn is_ready() -> bool {
    STATE.load(Ordering::Acquire) == READY
}

/// True once the shim is set up in a process that links libgc: the
/// regions serve malloc, whether or not libgc is initialized yet.
#[inline(always)]
pub fn is_serving() -> bool {
    matches!(STATE.load(Ordering::Acquire), SERVING | ADOPTING | READY)
}

pub fn is_uninitialized() -> bool {
    STATE.load(Ordering::Acquire) == UNINITIALIZED
}

/// Whether libgc has been initialized in a process the shim serves.
pub fn libgc_initialized() -> bool {
    is_serving() && gc::is_init_called()
}

/// Who created a thread with `start` and `arg`. Learns libgc's marker start
/// routine from the first marker creation.
pub fn owner_of(start: usize, arg: *mut c_void) -> StartRoutineOwner {
    let marker = MARKER_START.load(Ordering::Relaxed);
    if start == marker {
        return StartRoutineOwner::LibgcMarker;
    }
    // libgc passes a marker its index; a real pointer is never below the
    // first page. Another thread creating a thread with a small integer
    // argument in the instant between libgc setting its marker count and
    // creating the first marker would be taken for one.
    if marker == 0 && is_serving() && (arg as usize) < 4096 && gc::parallel() {
        MARKER_START.store(start, Ordering::Relaxed);
        return StartRoutineOwner::LibgcMarker;
    }
    if start == GC_START.load(Ordering::Relaxed) && start != 0 {
        StartRoutineOwner::LibgcThread
    } else {
        StartRoutineOwner::Other
    }
}

/// Called by the `pthread_create` hook for calls made while the shim itself
/// is inside libgc: true for the adoption's probe, whose creation must be
/// refused ([`probe_gc_pthread_create`]) after its start routine is noted.
pub fn observe_probe(start: usize) -> bool {
    if PROBING.load(Ordering::Relaxed) == 0 {
        return false;
    }
    GC_START.store(start, Ordering::Relaxed);
    true
}

/// Whether the calling thread is the process's main thread.
pub fn on_main_thread() -> bool {
    // SAFETY: plain system calls without arguments.
    unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t == libc::getpid() }
}

/// Step 1, once: binds libc, places the regions, installs the hook.
/// Calls nothing in libgc that would initialize it or change its settings.
pub fn set_up() {
    if STATE
        .compare_exchange(
            UNINITIALIZED,
            SETTING_UP,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        return;
    }
    real::resolve_all();
    stats::read_environment();
    crate::purge::read_environment();
    if !crate::sys::libgc_is_linked() {
        STATE.store(DISABLED, Ordering::Release);
        return;
    }
    // The regions are scanned through libgc's hook, or not used at all.
    if scan::install_hook() {
        let address_space = small::ADDRESS_SPACE + large::ADDRESS_SPACE;
        if let Some(mut placement) = crate::address_space::Placement::find(address_space) {
            small::place_region(&mut placement);
            large::place_region(&mut placement);
        }
    }
    register_fork_handlers();
    threads::create_exit_key();
    STATE.store(SERVING, Ordering::Release);
}

/// Step 2: takes libgc up if it is initialized and this is a safe moment
/// (not inside libgc on the shim's behalf, on a thread libgc knows, or
/// `force`d by the program's own request). Returns whether the shim is
/// ready now.
#[inline]
pub fn adopt_if_initialized(me: &ThreadState, force: bool) -> bool {
    if is_ready() {
        return true;
    }
    if STATE.load(Ordering::Acquire) != SERVING || me.bypass.get() != 0 {
        return false;
    }
    adopt_slow(me, force)
}

#[cold]
fn adopt_slow(me: &ThreadState, force: bool) -> bool {
    if !gc::is_init_called() {
        return false;
    }
    // GC_thread_is_registered takes libgc's lock; libgc calls none of the
    // hooks that lead here while it holds it (marker creation bypasses).
    if !force && !me.bypassing(gc::thread_is_registered) {
        return false;
    }
    if STATE
        .compare_exchange(SERVING, ADOPTING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return is_ready();
    }
    scan::set_up_mark_procedure();
    signals::set_collector_signals(gc::suspend_signal(), gc::restart_signal());
    if !force {
        // A registered thread must not block the collector's signals.
        signals::unblock_collector_signals();
    }
    // Threads that were started before libgc was initialized are registered
    // at their next allocation. libgc must be readied for them here, on a
    // thread it knows, before READY lets them try: until it is, libgc takes
    // no lock, and one of them readying it while this thread allocates or
    // collects races with it (markers counted before their mark stack
    // exists; a crash or "Signals delivery fails constantly" in 26 of 40
    // runs of the before-init-busy scenario).
    if proc_self::thread_count().map_or(true, |threads| threads > 1) {
        enable_threads_now(me);
    }
    STATE.store(READY, Ordering::Release);
    true
}

/// Step 3, once, after adoption: readies libgc for threads the shim
/// registers, and learns `GC_start_routine` so that the `pthread_create`
/// hook can tell `GC_pthread_create`'s calls. Done by the adoption itself
/// when other threads are running then; otherwise called before the shim
/// registers a thread libgc does not know, and by the `pthread_create`,
/// `timer_create` and `mq_notify` hooks before a new thread can start.
pub fn enable_threads(me: &ThreadState) {
    if THREADS.load(Ordering::Acquire) == THREADS_ENABLED || !is_ready() || me.bypass.get() != 0 {
        return;
    }
    enable_threads_now(me);
}

/// [`enable_threads`]' work, also from the adoption (not ready yet).
///
/// libgc takes no lock until this is done, so it is safe only where no
/// other thread can be inside libgc: on a thread libgc knows (the adoption,
/// a hook called by a registered thread), or on a thread that appeared
/// after the adoption without going through a hook (a helper thread glibc
/// starts for `aio` or `getaddrinfo_a`), in a process where no other
/// thread had been registered yet.
fn enable_threads_now(me: &ThreadState) {
    if THREADS
        .compare_exchange(
            THREADS_OFF,
            THREADS_ENABLING,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
    {
        // This may run on one of glibc's own threads (a SIGEV_THREAD
        // helper that allocates): see signals::keeping_signal_mask.
        signals::keeping_signal_mask(|| {
            me.bypassing(|| {
                // Starts the markers, unless the program's calls already did.
                gc::allow_register_threads();
                if gc::has_pthread_create() {
                    probe_gc_pthread_create();
                }
            })
        });
        THREADS.store(THREADS_ENABLED, Ordering::Release);
        return;
    }
    // Another thread is at it, holding no lock that this one could hold
    // (libgc calls none of the hooks that lead here with its lock held).
    while THREADS.load(Ordering::Acquire) != THREADS_ENABLED {
        // SAFETY: a system call without arguments.
        unsafe { libc::sched_yield() };
    }
}

/// The region allocators' locks must not be held across `fork`. Nothing
/// holds a region lock while it waits for libgc's lock (nor the reverse),
/// so the order relative to libgc's own fork handlers does not matter.
fn register_fork_handlers() {
    extern "C" fn prepare() {
        crate::purge::lock_for_fork();
        small::lock_all_for_fork();
        large::lock_all_for_fork();
    }
    extern "C" fn after() {
        large::unlock_all_after_fork();
        small::unlock_all_after_fork();
        crate::purge::unlock_after_fork();
    }
    extern "C" fn after_in_child() {
        after();
        // The other threads' cached blocks are the child's now, but their
        // caches' growth no longer counts against the process's bound.
        crate::tls::current().cache.alone_after_fork();
        // A step another thread was in the middle of is not finished in
        // the child, where that thread does not exist: let the child's
        // threads take it again rather than wait for it.
        let _ = STATE.compare_exchange(ADOPTING, SERVING, Ordering::AcqRel, Ordering::Acquire);
        let _ = THREADS.compare_exchange(
            THREADS_ENABLING,
            THREADS_OFF,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
    // SAFETY: three valid handlers with the C ABI and no arguments.
    unsafe { libc::pthread_atfork(Some(prepare), Some(after), Some(after_in_child)) };
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
    PROBING.store(1, Ordering::Relaxed);
    // SAFETY: `thread` is a valid out-pointer and `probe_thread` a valid
    // start routine that ignores its argument.
    let rc = unsafe { gc::pthread_create(&mut thread, probe_thread, ptr::null_mut()) };
    PROBING.store(0, Ordering::Relaxed);
    if rc == 0 {
        // A libgc that did not route the creation through the hook.
        gc::pthread_join(thread);
    }
}

/// Makes the calling thread known to the collector if the shim can now
/// (see [`threads::join_collector`]); for the C API and Rust callers.
pub fn register_current_thread() -> bool {
    threads::join_collector_forced(tls::current())
}

/// The library constructor: the shim is set up before `main` and before
/// the constructors of libraries loaded after it.
extern "C" fn run_constructor() {
    set_up();
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
