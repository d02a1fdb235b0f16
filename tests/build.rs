//! Builds the bench-only XDP programs (forwarder-bench-ebpf) with the nightly toolchain and
//! bpf-linker, exactly as forwarder/build.rs builds the product's, so that the packet-rate
//! bench can load them (`include_bytes_aligned!` in src/bench/rate/progs.rs). They stay out
//! of the daemon's object.

fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../forwarder-bench-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package { name: "forwarder-bench-ebpf", root_dir: root, ..Default::default() }],
        aya_build::Toolchain::Nightly,
    )
}
