// The body shared by both binaries: std threads that allocate through
// Box/Vec (collected memory, with bdwgc-alloc as the global allocator), hold
// the objects, and force collections. No thread registers itself.

use bdwgc_alloc::Allocator;

#[global_allocator]
static GLOBAL_ALLOCATOR: Allocator = Allocator;

const THREADS: u64 = 4;
const OBJECTS: u64 = 2000;

fn pattern(tag: u64) -> [u64; 8] {
    core::array::from_fn(|i| tag ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn garbage() {
    for i in 0..20_000u64 {
        // Unreachable at once: the collector reclaims it.
        std::hint::black_box(Box::leak(Box::new([i; 12])));
    }
}

fn main() {
    // SAFETY: called once, on the main thread, before other threads start.
    unsafe { Allocator::initialize() };
    println!("shim={}", if shim_active() { "active" } else { "absent" });
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let kept: Vec<Box<[u64; 8]>> =
                    (0..OBJECTS).map(|i| Box::new(pattern(t << 32 | i))).collect();
                let names: Vec<String> = (0..OBJECTS).map(|i| format!("object {t}/{i}")).collect();
                for _ in 0..3 {
                    Allocator::force_collect();
                    garbage();
                }
                let lost_boxes = kept.iter().zip(0..).filter(|(b, i)| ***b != pattern(t << 32 | i)).count();
                let lost_names = names.iter().zip(0..).filter(|(n, i)| **n != format!("object {t}/{i}")).count();
                lost_boxes + lost_names
            })
        })
        .collect();
    let lost: usize = handles.into_iter().map(|h| h.join().unwrap_or(1)).sum();
    println!("lost={lost} finalized=0");
    println!("RESULT {}", if lost == 0 { "ok" } else { "fail" });
    std::process::exit(i32::from(lost != 0));
}
