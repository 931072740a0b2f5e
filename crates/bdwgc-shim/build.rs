// The examples call libgc directly; the library itself leaves libgc to the
// final link of whatever program uses it.
fn main() {
    println!("cargo:rustc-link-arg-examples=-lgc");
    println!("cargo:rerun-if-changed=build.rs");
}
