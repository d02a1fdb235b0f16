//! BPF_PROG_TEST_RUN tests of the kernel program: frames built by `forwarder_tests::packet`
//! go through `forwarder_xdp` (and `forwarder_tc`), and every output frame is parsed again
//! with etherparse, every checksum recomputed, and compared byte for byte with the frame
//! the builder makes for the expected translation.
//!
//! Needs root; run with `cargo test -p forwarder-tests --test packet`.
//!
//! By topic: [`lifecycle`], [`not_ours`], [`limits`], [`rewrite`], [`path`]; the shared
//! harness and flow helpers in [`common`].

mod common;
mod lifecycle;
mod limits;
mod not_ours;
mod path;
mod rewrite;
