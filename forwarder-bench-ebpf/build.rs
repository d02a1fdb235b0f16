//! The same linker flag as forwarder-ebpf/build.rs (see there): without it the ceiling
//! zeroes its FIB parameter block with a byte-by-byte memset call, which the forwarder no
//! longer pays, and the ceiling would be slower than the fastest forwarding program can be.
fn main() {
    println!("cargo:rustc-link-arg-bins=--disable-expand-memcpy-in-order");
}
