//! The collector stops the world by signalling every registered thread. A
//! registered thread that blocks those two signals (directly, by inheriting a
//! mask, or through `pthread_attr_setsigmask_np`) makes the collector retry
//! and then abort the process. The shim removes them from every mask a thread
//! asks for, and unblocks them in every thread it registers.

use core::ffi::c_int;
use core::mem::MaybeUninit;
use core::ptr;
use core::sync::atomic::{AtomicI32, Ordering};

use crate::real;
use crate::sys::gc;
use crate::tls::ThreadState;

static SUSPEND_SIGNAL: AtomicI32 = AtomicI32::new(-1);
static RESTART_SIGNAL: AtomicI32 = AtomicI32::new(-1);

/// Records the collector's signals, as libgc reports them once initialized.
pub fn set_collector_signals(suspend: c_int, restart: c_int) {
    SUSPEND_SIGNAL.store(suspend, Ordering::Relaxed);
    RESTART_SIGNAL.store(restart, Ordering::Relaxed);
}

/// The collector's two signals; none before libgc is initialized (the
/// program may still move them then, with `GC_set_suspend_signal`).
fn collector_signals() -> [c_int; 2] {
    let suspend = SUSPEND_SIGNAL.load(Ordering::Relaxed);
    if suspend < 0 && crate::init::libgc_initialized() {
        // Fixed from libgc's initialization on; the getters take no lock.
        set_collector_signals(gc::suspend_signal(), gc::restart_signal());
    }
    [
        SUSPEND_SIGNAL.load(Ordering::Relaxed),
        RESTART_SIGNAL.load(Ordering::Relaxed),
    ]
}

fn empty_set() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initializes the whole set.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        set.assume_init()
    }
}

/// Unblocks the collector's signals in the calling thread.
pub fn unblock_collector_signals() {
    let mut set = empty_set();
    let mut any = false;
    for signal in collector_signals() {
        if signal > 0 {
            // SAFETY: `set` is initialized and `signal` is a valid number.
            unsafe { libc::sigaddset(&mut set, signal) };
            any = true;
        }
    }
    if let (true, Some(pthread_sigmask)) = (any, real::pthread_sigmask()) {
        // SAFETY: `set` is initialized; the old mask is not wanted.
        unsafe { pthread_sigmask(libc::SIG_UNBLOCK, &set, ptr::null_mut()) };
    }
}

/// Remembers whether the calling thread, with this mask change, asks to
/// have the collector's suspend signal blocked (whatever the shim then
/// installs). A detached thread started without an argument by a thread
/// that asked so is one meant to stay out of stop-the-world: libgc 8.3
/// starts its userfaultfd monitor so, with every signal blocked, and that
/// thread must keep running while the world is stopped.
///
/// # Safety
/// `set` must be null or point to an initialized `sigset_t`.
pub unsafe fn note_mask_request(me: &ThreadState, how: c_int, set: *const libc::sigset_t) {
    // Inside GC_init the shim has not read the signals yet, and that is
    // where libgc 8.3 starts the monitor when the program enables
    // incremental mode first: ask libgc, whose getter (a plain read)
    // answers before and during its initialization.
    let suspend = match collector_signals()[0] {
        known if known > 0 => known,
        _ => gc::suspend_signal(),
    };
    if set.is_null() || suspend <= 0 {
        return;
    }
    // SAFETY: the caller guarantees `set` is valid.
    let names_suspend = unsafe { libc::sigismember(set, suspend) } == 1;
    match how {
        libc::SIG_BLOCK if names_suspend => me.asked_to_block_collector.set(true),
        libc::SIG_UNBLOCK if names_suspend => me.asked_to_block_collector.set(false),
        libc::SIG_SETMASK => me.asked_to_block_collector.set(names_suspend),
        _ => {}
    }
}

/// The mask to really install for `how`/`set`: `None` to pass `set` as it
/// is, or a copy without the collector's signals.
///
/// # Safety
/// `set` must be null or point to an initialized `sigset_t`.
pub unsafe fn without_collector_signals(
    how: c_int,
    set: *const libc::sigset_t,
) -> Option<libc::sigset_t> {
    if set.is_null() || how == libc::SIG_UNBLOCK {
        return None;
    }
    let signals = collector_signals();
    // SAFETY: the caller guarantees `set` is valid.
    let blocks_any = signals
        .iter()
        .any(|&s| s > 0 && unsafe { libc::sigismember(set, s) } == 1);
    if !blocks_any {
        return None;
    }
    // SAFETY: as above; sigset_t is plain data.
    let mut copy = unsafe { *set };
    for signal in signals {
        if signal > 0 {
            // SAFETY: `copy` is initialized.
            unsafe { libc::sigdelset(&mut copy, signal) };
        }
    }
    Some(copy)
}

/// The kernel's signal mask: 64 signals, one bit each (x86_64 and aarch64).
type KernelSigset = u64;

/// `rt_sigprocmask` itself, without glibc's filtering of its own signals.
///
/// # Safety
/// `set` and `old` must each be null or valid for a `KernelSigset`.
unsafe fn kernel_sigprocmask(how: c_int, set: *const KernelSigset, old: *mut KernelSigset) -> bool {
    // SAFETY: the caller's contract; the size passed is the set's.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            how,
            set,
            old,
            core::mem::size_of::<KernelSigset>(),
        )
    };
    rc == 0
}

/// Runs `f` and puts the calling thread's signal mask back as it was,
/// bit for bit, with the system call itself.
///
/// For libgc code that may run on one of glibc's own threads: the timer
/// helper thread of `SIGEV_THREAD` keeps SIGTIMER (glibc's internal signal
/// 32) blocked to wait for it, and libgc's marker start restores a mask
/// through `pthread_sigmask`, which never blocks glibc's internal signals.
/// Without this, the next timer signal would kill the process.
pub fn keeping_signal_mask<R>(f: impl FnOnce() -> R) -> R {
    let mut saved: KernelSigset = 0;
    // SAFETY: a null new set only reads the current mask into `saved`.
    let have_saved = unsafe { kernel_sigprocmask(libc::SIG_BLOCK, ptr::null(), &mut saved) };
    let result = f();
    if have_saved {
        // SAFETY: installs the mask read from the kernel above.
        unsafe { kernel_sigprocmask(libc::SIG_SETMASK, &saved, ptr::null_mut()) };
    }
    result
}
