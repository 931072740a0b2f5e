// The body shared by `std_threads` (with the shim) and `std_threads_no_shim`.
// std threads allocate GC objects, keep them only in Vecs (malloc memory) and
// on their stacks, and force collections.

use std::ffi::c_void;

extern "C" {
    fn GC_init();
    fn GC_malloc(size: usize) -> *mut c_void;
    fn GC_gcollect();
}

const THREADS: usize = 4;
const OBJECTS: usize = 2000;

fn new_object(tag: u64) -> *mut u64 {
    // SAFETY: GC_malloc returns null or 64 writable bytes.
    let p = unsafe { GC_malloc(64) }.cast::<u64>();
    assert!(!p.is_null(), "GC_malloc failed");
    for i in 0..8 {
        // SAFETY: inside the 64 bytes just allocated.
        unsafe { p.add(i).write(tag ^ (i as u64 * 0x9e37_79b9)) };
    }
    p
}

fn object_ok(p: *mut u64, tag: u64) -> bool {
    // SAFETY: p points into the GC heap (live, or reused if it was lost).
    (0..8).all(|i| unsafe { p.add(i).read() } == tag ^ (i as u64 * 0x9e37_79b9))
}

fn churn() {
    for _ in 0..50_000 {
        // SAFETY: plain allocation of garbage.
        let p = unsafe { GC_malloc(96) }.cast::<u8>();
        // SAFETY: at least one byte was allocated.
        unsafe { p.write(1) };
    }
}

/// A thread_local whose destructor runs after the thread's closure returned:
/// it allocates GC objects, keeps them in a Vec, collects and checks them.
struct AtThreadExit(u64);

static LOST_IN_DESTRUCTORS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Drop for AtThreadExit {
    fn drop(&mut self) {
        let kept: Vec<*mut u64> = (0..100).map(|i| new_object(self.0 + i)).collect();
        // SAFETY: a collection from this (still registered) thread.
        unsafe { GC_gcollect() };
        churn();
        let lost = kept.iter().zip(0..).filter(|(p, i)| !object_ok(**p, self.0 + i)).count();
        LOST_IN_DESTRUCTORS.fetch_add(lost, std::sync::atomic::Ordering::Relaxed);
    }
}

thread_local! {
    static AT_EXIT: std::cell::RefCell<Option<AtThreadExit>> = const { std::cell::RefCell::new(None) };
}

fn main() {
    // SAFETY: initializing the collector on the main thread.
    unsafe { GC_init() };
    println!("shim={}", if bdwgc_shim_active() { "active" } else { "absent" });
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let base = (t as u64) << 32;
                AT_EXIT.with(|slot| *slot.borrow_mut() = Some(AtThreadExit(base | 1 << 20)));
                let kept: Vec<*mut u64> = (0..OBJECTS as u64).map(|i| new_object(base + i)).collect();
                let boxed = Box::new(new_object(base + 999_999));
                for _ in 0..3 {
                    // SAFETY: a collection from this thread.
                    unsafe { GC_gcollect() };
                    churn();
                }
                let lost = kept.iter().enumerate().filter(|(i, p)| !object_ok(**p, base + *i as u64)).count()
                    + usize::from(!object_ok(*boxed, base + 999_999));
                lost
            })
        })
        .collect();
    let lost: usize = handles.into_iter().map(|h| h.join().unwrap_or(usize::MAX / 8)).sum::<usize>()
        + LOST_IN_DESTRUCTORS.load(std::sync::atomic::Ordering::Relaxed);
    println!("lost={lost} finalized=0");
    println!("RESULT {}", if lost == 0 { "ok" } else { "fail" });
    std::process::exit(i32::from(lost != 0));
}
