//! Builds the kernel program (forwarder-ebpf) with the nightly toolchain and bpf-linker, so
//! that the daemon can embed it (`include_bytes_aligned!` in src/ebpf.rs).

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=../forwarder-common/src");
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../forwarder-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package { name: "forwarder-ebpf", root_dir: root, ..Default::default() }],
        aya_build::Toolchain::Nightly,
    )
}
