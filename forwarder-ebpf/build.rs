//! Linker flags for the program (bpf-linker).
//!
//! bpf-linker passes `--bpf-expand-memcpy-in-order` to LLVM unless told not to. That option
//! keeps memcpy's loads and stores in order for JITs that pattern-match them, and to do so
//! it turns off LLVM's inline expansion of every memory intrinsic: a zeroed struct then
//! becomes a call to compiler-builtins' memset, a loop storing one byte per iteration (about
//! 100 instructions for a 24-byte `NextHop`, 320 for the 64-byte FIB parameter block).
//! Without it LLVM writes a few word stores, as clang does for C programs by default.
fn main() {
    println!("cargo:rustc-link-arg-bins=--disable-expand-memcpy-in-order");
}
