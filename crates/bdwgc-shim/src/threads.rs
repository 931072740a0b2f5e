//! Thread registration: every thread that runs code is known to the
//! collector before that code runs, and leaves it when the thread ends.
//!
//! - Threads made through `pthread_create` start in [`shim_thread_start`],
//!   which registers them, then runs the real start routine.
//! - Threads made by libgc's `GC_pthread_create` register themselves; they
//!   start in [`libgc_thread_start`], which only unblocks the collector's
//!   signals. libgc's marker threads are left alone.
//! - Threads glibc starts for `SIGEV_THREAD` notifications start in
//!   [`sigev_thread_start`], which registers them.
//! - Any other thread (made before the shim was ready, or by raw `clone`)
//!   is registered on its first allocation.
//!
//! The shim unregisters its threads from a pthread-key destructor that
//! re-arms itself until glibc's last destructor round, so C++ and Rust
//! `thread_local` destructors and other keys' destructors still run as a
//! registered thread. After that, the thread's allocations go to glibc.

use core::ffi::{c_int, c_void};
use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::init::{self, StartRoutineOwner};
use crate::real::{self, CStartRoutine};
use crate::sys::{gc, GcStackBase, StartRoutine};
use crate::tls::{self, ThreadState, MODE_COLLECTOR, MODE_LIBC, MODE_PENDING, MODE_UNKNOWN};
use crate::{alloc, signals, stats};

/// glibc's PTHREAD_DESTRUCTOR_ITERATIONS.
const DESTRUCTOR_ROUNDS: u8 = 4;
const NO_KEY: u32 = u32::MAX;
static EXIT_KEY: AtomicU32 = AtomicU32::new(NO_KEY);

/// Creates the pthread key whose destructor unregisters threads at exit.
pub fn create_exit_key() {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer; the destructor has the right ABI.
    if unsafe { libc::pthread_key_create(&mut key, Some(on_thread_exit)) } == 0 {
        EXIT_KEY.store(key, Ordering::Release);
    }
}

/// Makes sure the thread-exit destructor runs for this thread (once armed,
/// it re-arms itself until its last round).
fn arm_exit_destructor(me: &ThreadState) {
    if !me.exit_armed.get() {
        me.exit_armed.set(true);
        set_exit_key(me);
    }
}

fn set_exit_key(me: &ThreadState) {
    let key = EXIT_KEY.load(Ordering::Acquire);
    if key != NO_KEY {
        // A key past glibc's first 32 allocates its per-thread slot array.
        me.bypassing(|| {
            // SAFETY: `key` was created by pthread_key_create; the value is
            // only a non-null marker.
            unsafe {
                libc::pthread_setspecific(key, ptr::NonNull::<u8>::dangling().as_ptr().cast())
            }
        });
    }
}

unsafe extern "C" fn on_thread_exit(_: *mut c_void) {
    let me = tls::current();
    let round = me.exit_rounds.get() + 1;
    me.exit_rounds.set(round);
    if round < DESTRUCTOR_ROUNDS {
        // Run again in the next round, after other keys' destructors.
        set_exit_key(me);
        return;
    }
    leave_collector(me);
    me.cache.flush();
}

/// Stops routing this thread's allocations to the collector, and
/// unregisters the thread if the shim registered it.
fn leave_collector(me: &ThreadState) {
    stats::flush(me);
    me.mode.set(MODE_LIBC);
    if me.owns_registration.replace(false) {
        me.bypassing(|| {
            // The program may have unregistered the thread itself; libgc
            // crashes on a second unregistration.
            if gc::thread_is_registered() {
                gc::unregister_my_thread();
            }
        });
    }
}

/// Whether the calling thread allocates from the shim's regions (and from
/// libgc when registered), registering it on the way if it can be.
#[inline(always)]
pub fn allocates_through_shim(me: &ThreadState) -> bool {
    match me.mode.get() {
        MODE_COLLECTOR => true,
        // Nothing can register the thread before libgc is initialized (the
        // shim takes libgc up only after): one look at libgc's flag, not
        // the whole join, on each allocation until then.
        MODE_PENDING if !gc::is_init_called() => true,
        MODE_UNKNOWN | MODE_PENDING => {
            join_collector(me);
            me.mode.get() != MODE_LIBC
        }
        _ => false,
    }
}

/// Makes sure the collector knows the calling thread: notes a registration
/// made by someone else (libgc, the program), or registers the thread.
/// Before the shim has taken libgc up, the thread allocates from the regions
/// and waits for its registration (mode pending). Returns whether the
/// thread is registered now.
#[cold]
pub fn join_collector(me: &ThreadState) -> bool {
    join_collector_with(me, None, false)
}

/// As [`join_collector`], on the program's explicit request: takes libgc
/// up even from a thread libgc does not know yet, and registers the thread
/// again if the program unregistered it.
pub fn join_collector_forced(me: &ThreadState) -> bool {
    if me.mode.get() == MODE_COLLECTOR && !me.owns_registration.get() {
        recheck_registration(me);
    }
    join_collector_with(me, None, true)
}

/// For a thread someone else registered: if it has been unregistered since
/// (a program that registered the thread itself and then unregistered it),
/// the shim stops believing it registered, so the next join registers it.
pub fn recheck_registration(me: &ThreadState) {
    if me.mode.get() == MODE_COLLECTOR
        && !me.owns_registration.get()
        && me.bypass.get() == 0
        && !me.bypassing(gc::thread_is_registered)
    {
        me.mode.set(MODE_PENDING);
    }
}

/// As [`join_collector`]; a thread registered here has its stack scanned
/// from `stack_base` down, or from the base recorded at its start, or from
/// the base glibc reports.
fn join_collector_with(me: &ThreadState, stack_base: Option<GcStackBase>, force: bool) -> bool {
    if me.mode.get() == MODE_COLLECTOR {
        return true;
    }
    if me.mode.get() == MODE_LIBC {
        return false;
    }
    if let Some(base) = &stack_base {
        me.stack_base.set(base.mem_base as usize);
    }
    if !init::adopt_if_initialized(me, force) {
        if init::is_serving() && me.bypass.get() == 0 {
            // Registered as soon as the shim takes libgc up.
            arm_exit_destructor(me);
            me.mode.set(MODE_PENDING);
        }
        return false;
    }
    if me.bypassing(gc::thread_is_registered) {
        // The main thread, a GC_pthread_create thread, or a thread the
        // program registered itself.
        enter_collector(me);
        return true;
    }
    init::enable_threads(me);
    let recorded = match me.stack_base.get() {
        0 => None,
        base => Some(GcStackBase {
            mem_base: base as *mut c_void,
        }),
    };
    register_current_thread(me, recorded)
}

/// Registers the calling thread with the collector: its stack from
/// `stack_base` down, or its whole stack when `None`.
fn register_current_thread(me: &ThreadState, stack_base: Option<GcStackBase>) -> bool {
    // pthread_getattr_np allocates; libgc takes no lock here.
    let Some(stack_base) = stack_base.or_else(|| me.bypassing(gc::stack_base)) else {
        me.mode.set(MODE_LIBC);
        return false;
    };
    signals::unblock_collector_signals();
    let rc = me.bypassing(|| gc::register_my_thread(&stack_base));
    if rc == crate::sys::GC_SUCCESS {
        me.owns_registration.set(true);
        me.exit_rounds.set(0);
        stats::count_thread_registered();
    }
    enter_collector(me);
    true
}

/// Routes the calling thread's allocations to the collector from now on.
/// The exit destructor is armed first: the thread's block cache fills from
/// here on, and the destructor is what gives it back when the thread ends
/// (so the allocation fast path need not check).
fn enter_collector(me: &ThreadState) {
    arm_exit_destructor(me);
    me.mode.set(MODE_COLLECTOR);
}

/// The real start routine and argument, kept in scanned memory while the new
/// thread starts: the argument may be the only reference to a GC object.
#[repr(C)]
struct StartRecord {
    start: StartRoutine,
    arg: *mut c_void,
}

/// Takes the start record back and frees it.
///
/// # Safety
/// `record` must come from [`spawn_through`] and be taken once.
unsafe fn take_record(record: *mut c_void) -> (StartRoutine, *mut c_void) {
    // SAFETY: per the contract, a live StartRecord written by spawn_through.
    let StartRecord { start, arg } = unsafe { record.cast::<StartRecord>().read() };
    // SAFETY: allocated by alloc::malloc, freed once here.
    unsafe { alloc::free(record) };
    (start, arg)
}

/// First code of every thread the shim creates for a caller other than libgc.
unsafe extern "C-unwind" fn shim_thread_start(record: *mut c_void) -> *mut c_void {
    // libgc scans a thread's stack from its base down. Above this frame is
    // only glibc's start_thread, which holds nothing of the program's, so
    // the base can be here, as libgc's own GC_call_with_stack_base does:
    // that spares pthread_getattr_np, a system call and glibc's malloc, in
    // every new thread.
    let stack_top = 0u8;
    let stack_base = GcStackBase {
        mem_base: ptr::addr_of!(stack_top).cast_mut().cast(),
    };
    join_collector_with(tls::current(), Some(stack_base), false);
    // SAFETY: `record` is what spawn_through passed to this thread.
    let result = unsafe { run_start_routine(record) };
    // Keeps this frame, and `stack_top` above everything the start routine
    // puts on the stack, alive during the call (no tail call).
    core::hint::black_box(&stack_top);
    result
}

/// Takes the start record and runs the caller's start routine, in a frame
/// below the one whose address is the thread's stack base.
///
/// # Safety
/// As [`take_record`].
#[inline(never)]
unsafe fn run_start_routine(record: *mut c_void) -> *mut c_void {
    // SAFETY: the caller's contract.
    let (start, arg) = unsafe { take_record(record) };
    // SAFETY: the caller's start routine with the caller's argument.
    unsafe { start(arg) }
}

/// First code of the threads libgc's `GC_pthread_create` makes.
unsafe extern "C-unwind" fn libgc_thread_start(record: *mut c_void) -> *mut c_void {
    signals::unblock_collector_signals();
    // SAFETY: `record` is what spawn_through passed to this thread.
    let (start, arg) = unsafe { take_record(record) };
    // SAFETY: libgc's start routine with libgc's argument.
    let result = unsafe { start(arg) };
    // libgc unregistered the thread as its start routine ended.
    tls::current().mode.set(MODE_LIBC);
    result
}

/// # Safety
/// As `pthread_create`.
unsafe fn spawn_through(
    real_create: unsafe extern "C" fn(
        *mut libc::pthread_t,
        *const libc::pthread_attr_t,
        CStartRoutine,
        *mut c_void,
    ) -> c_int,
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    trampoline: StartRoutine,
    start: StartRoutine,
    arg: *mut c_void,
) -> c_int {
    let record = alloc::malloc(core::mem::size_of::<StartRecord>());
    if record.is_null() {
        return libc::EAGAIN;
    }
    // SAFETY: `record` is a fresh, suitably aligned block of the right size.
    unsafe {
        record
            .cast::<StartRecord>()
            .write(StartRecord { start, arg })
    };
    // SAFETY: the two start routine types differ only in whether unwinding
    // may pass through them, which libc's thread start allows.
    let trampoline = unsafe { core::mem::transmute::<StartRoutine, CStartRoutine>(trampoline) };
    // SAFETY: caller's contract for thread/attr; record is ours.
    let rc = unsafe { real_create(thread, attr, trampoline, record) };
    if rc != 0 {
        // SAFETY: the thread was not created, so the record is still ours.
        unsafe { alloc::free(record) };
    }
    rc
}

/// The `pthread_create` hook.
///
/// # Safety
/// As `pthread_create`.
pub unsafe fn create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    start: StartRoutine,
    arg: *mut c_void,
) -> c_int {
    let me = tls::current();
    if init::is_uninitialized() && me.bypass.get() == 0 && init::on_main_thread() {
        // A library constructor that runs before the shim's starts a thread:
        // set the shim up now, so the thread starts through it.
        init::set_up();
    }
    let Some(real_create) = real::pthread_create() else {
        return libc::EAGAIN;
    };
    // SAFETY: identical ABI; see spawn_through.
    let c_start = unsafe { core::mem::transmute::<StartRoutine, CStartRoutine>(start) };
    if !init::is_serving() {
        // SAFETY: caller's contract.
        return unsafe { real_create(thread, attr, c_start, arg) };
    }
    let mut owner = init::owner_of(start as usize, arg);
    if owner == StartRoutineOwner::LibgcMarker {
        // libgc holds its lock: what the creation allocates goes to glibc.
        // SAFETY: caller's contract.
        return me.bypassing(|| unsafe { real_create(thread, attr, c_start, arg) });
    }
    if me.bypass.get() != 0 {
        // The shim is inside libgc: this is libgc's call.
        if init::observe_probe(start as usize) {
            return libc::EAGAIN;
        }
        // SAFETY: caller's contract.
        return unsafe { real_create(thread, attr, c_start, arg) };
    }
    if owner == StartRoutineOwner::Other {
        // libgc may have been initialized since: take it up now, and learn
        // GC_pthread_create's start routine, then look again.
        init::adopt_if_initialized(me, false);
        init::enable_threads(me);
        owner = init::owner_of(start as usize, arg);
    }
    recheck_registration(me);
    // SAFETY: caller's contract for `attr`.
    if owner == StartRoutineOwner::Other && unsafe { meant_to_stay_out(me, attr, arg) } {
        // Started as it is; registered only if it ever allocates.
        // SAFETY: caller's contract.
        return unsafe { real_create(thread, attr, c_start, arg) };
    }
    if owner == StartRoutineOwner::LibgcThread {
        // SAFETY: caller's contract.
        return unsafe { spawn_through(real_create, thread, attr, libgc_thread_start, start, arg) };
    }
    // A thread started before the shim took libgc up starts pending, with
    // its stack base recorded, and is registered at its first allocation
    // after that. (Started by GC_pthread_create in that window, it
    // registers itself, which the shim notices then.)
    // SAFETY: caller's contract.
    unsafe { spawn_through(real_create, thread, attr, shim_thread_start, start, arg) }
}

/// Whether a new thread is meant to stay out of the collector's
/// stop-the-world: detached, without an argument, created by a thread that
/// asked to block the collector's suspend signal (see
/// `signals::note_mask_request`), as libgc 8.3 starts its userfaultfd
/// monitor under its allocation lock. Registering that thread would stop
/// it with the world, while the collector needs it to serve write faults.
///
/// # Safety
/// `attr` must be null or a valid thread attribute object.
unsafe fn meant_to_stay_out(
    me: &ThreadState,
    attr: *const libc::pthread_attr_t,
    arg: *mut c_void,
) -> bool {
    if !me.asked_to_block_collector.get() || !arg.is_null() || attr.is_null() {
        return false;
    }
    let mut state: c_int = 0;
    // SAFETY: `attr` is valid per the contract; `state` is an out-pointer.
    let rc = unsafe { crate::sys::glibc::pthread_attr_getdetachstate(attr, &mut state) };
    rc == 0 && state == libc::PTHREAD_CREATE_DETACHED
}

/// What a `SIGEV_THREAD` notification would have called.
#[repr(C)]
struct SigevRecord {
    function: unsafe extern "C" fn(libc::sigval),
    value: libc::sigval,
}

/// glibc's `struct sigevent` as laid out for `SIGEV_THREAD`.
#[repr(C)]
struct SigeventThread {
    value: libc::sigval,
    signo: c_int,
    notify: c_int,
    function: Option<unsafe extern "C" fn(libc::sigval)>,
    attributes: *mut libc::pthread_attr_t,
    _pad: [u8; 32],
}
const _: () =
    assert!(core::mem::size_of::<SigeventThread>() == core::mem::size_of::<libc::sigevent>());

/// Runs a `SIGEV_THREAD` notification on glibc's thread, registered.
extern "C" fn sigev_thread_start(value: libc::sigval) {
    join_collector(tls::current());
    // glibc starts these threads with every signal blocked.
    signals::unblock_collector_signals();
    // SAFETY: `value` carries the SigevRecord made by `wrap_sigev_thread`,
    // which is never freed.
    let record = unsafe { &*value.sival_ptr.cast::<SigevRecord>() };
    // SAFETY: the program's notification function with its own value.
    unsafe { (record.function)(record.value) };
}

/// A copy of `event` whose `SIGEV_THREAD` notification registers its thread,
/// or `None` when `event` needs no change.
///
/// The record is kept for the life of the process (a timer may fire any
/// number of times, and glibc does not say when it stops): 16 bytes per
/// `timer_create`/`mq_notify` call that asks for a thread.
///
/// # Safety
/// `event` must be null or point to a valid `struct sigevent`.
pub unsafe fn wrap_sigev_thread(
    event: *const libc::sigevent,
) -> Result<Option<libc::sigevent>, ()> {
    let me = tls::current();
    if event.is_null() || !init::is_serving() || me.bypass.get() != 0 {
        return Ok(None);
    }
    // SAFETY: caller's contract; same size and alignment (checked above).
    let thread_event = unsafe { &*event.cast::<SigeventThread>() };
    let Some(function) = thread_event
        .function
        .filter(|_| thread_event.notify == libc::SIGEV_THREAD)
    else {
        return Ok(None);
    };
    // glibc's helper thread will be registered: ready libgc for it here,
    // on the caller's thread, as the pthread_create hook does.
    init::adopt_if_initialized(me, false);
    init::enable_threads(me);
    let record = alloc::malloc(core::mem::size_of::<SigevRecord>()).cast::<SigevRecord>();
    if record.is_null() {
        return Err(());
    }
    // SAFETY: fresh block of the right size; `event` is plain data.
    unsafe {
        record.write(SigevRecord {
            function,
            value: thread_event.value,
        });
        let mut copy = event.read();
        let copy_thread = (&mut copy as *mut libc::sigevent).cast::<SigeventThread>();
        (*copy_thread).function = Some(sigev_thread_start);
        (*copy_thread).value = libc::sigval {
            sival_ptr: record.cast(),
        };
        Ok(Some(copy))
    }
}
