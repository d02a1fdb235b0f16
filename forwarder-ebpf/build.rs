//! Linker flags for the program (bpf-linker).
//!
//! bpf-linker passes `--bpf-expand-memcpy-in-order` to LLVM unless told not to. That option
//! keeps memcpy's loads and stores in order for JITs that pattern-match them: memcpy goes to
//! BPF's own in-order expander, and the generic inline expansion is turned off for the rest,
//! so memset and memmove become calls. A zeroed struct then calls compiler-builtins'
//! memset, a loop storing one byte per iteration (about 100 instructions for a 24-byte
//! `NextHop`, 320 for the 64-byte FIB parameter block). Without the option LLVM writes a few
//! word stores, as clang does for C programs by default. `tests/tests/packet/path.rs` checks that
//! the object calls no memory builtin.
fn main() {
    println!("cargo:rustc-link-arg-bins=--disable-expand-memcpy-in-order");
}
