//! Hostile frames through the real program (BPF_PROG_TEST_RUN), every one checked: see
//! tests/src/hostile.rs for the kinds and the invariants. `cargo xtask test` runs a few
//! hundred thousand; `cargo xtask stress` runs ten million (FWT_HOSTILE_FRAMES).

use forwarder_tests::{hostile, testrun::Harness};

#[test]
fn hostile_frames_never_abort_never_relay_and_leave_valid_checksums() {
    forwarder_tests::require_root();
    let frames: u64 = std::env::var("FWT_HOSTILE_FRAMES")
        .ok()
        .map(|v| v.parse().expect("FWT_HOSTILE_FRAMES: a number of frames"))
        .unwrap_or(500_000);
    let seed: u64 = std::env::var("FWT_HOSTILE_SEED")
        .ok()
        .map(|v| v.parse().expect("FWT_HOSTILE_SEED: a number"))
        .unwrap_or(0x5eed_f00d);
    let mut h = Harness::new("hostile").expect("test harness");
    let start = std::time::Instant::now();
    let r = hostile::run(&mut h, frames, seed).unwrap_or_else(|e| panic!("{e:#}"));
    println!(
        "hostile frames: {} through XDP and {} through TC in {:.1} s (seed {seed:#x}): {} unchanged, {} rewritten, {} dropped; per kind: {:?}",
        r.frames,
        r.tc_frames,
        start.elapsed().as_secs_f64(),
        r.unchanged,
        r.rewritten,
        r.dropped,
        r.per_kind
    );
    assert_eq!(r.frames, frames);
    // Every kind was generated, and both outcomes happened: the invariants were exercised.
    assert_eq!(r.per_kind.len(), 12, "{:?}", r.per_kind);
    assert!(r.unchanged > 0 && r.rewritten > 0, "{r:?}");
}
