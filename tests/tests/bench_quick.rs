//! `cargo xtask bench --quick` as a test: the packet-rate bed sets up every contender in
//! both shapes and each one delivers the generator's frames, translated. No speed is
//! asserted (these machines are shared and noisy); only that the bed works, so that the
//! figure BENCHMARKS.md is judged by cannot silently stop being measured.
//!
//! The only contender allowed to be missing is the nftables flowtable on a kernel without
//! CONFIG_NF_FLOW_TABLE, and that is printed.

use forwarder_tests::bench::rate::{self, Contender};
use std::io::Write;

#[test]
fn every_contender_is_set_up_and_delivers_translated_frames() {
    forwarder_tests::require_root();
    let opts = rate::Options::quick();
    // measure() fails on any contender that cannot be set up, whose flow does not go
    // through it, that delivers nothing, or whose delivered frames are not translated
    // exactly (addresses, ports, checksums, TTL, MACs, payload).
    let outcomes = rate::measure(&opts, &mut |s| eprintln!("{s}")).expect("the packet-rate bed");
    assert_eq!(outcomes.len(), opts.shapes.len() * opts.contenders.len());
    for o in &outcomes {
        let what = format!("{:?} {}", o.shape, o.contender.name());
        if let Some(why) = &o.unavailable {
            assert_eq!(o.contender, Contender::NftFlowtable, "{what} was skipped: {why}");
            assert!(why.starts_with("not available on this kernel"), "{what}: {why}");
            // Straight to stderr, past the test harness's capture: a skip must be seen.
            let _ = writeln!(std::io::stderr(), "bench_quick: SKIPPED {what}: {why}");
            continue;
        }
        assert_eq!(o.samples.len(), opts.rounds, "{what}: samples");
        for s in &o.samples {
            assert!(s.delivered > 0, "{what} delivered nothing of {} frames", s.sent);
            assert_eq!(s.sent, opts.frames, "{what}: the send window was cut short");
        }
    }
    let md = rate::report::markdown(&opts, &rate::report::rows(&outcomes), None);
    println!("{md}");
}

/// The sink's guard: frames that arrive but are not translated as expected are not counted
/// as delivered, so a contender that passes frames on unchanged cannot look fast. Plain
/// routing forwards them unchanged while the sink expects the NAT VM's source address.
#[test]
fn untranslated_frames_are_not_counted_as_delivered() -> anyhow::Result<()> {
    use forwarder_tests::{
        bench::rate::{
            bed::{Bed, Shape, CLIENT},
            progs::Generator,
            send::{generator_frame, PAYLOAD},
        },
        packet::{flags, Tcp},
    };
    use std::net::SocketAddrV4;

    forwarder_tests::require_root();
    let mut bed = Bed::new(Shape::Hairpin, "rq")?;
    let ((smac, dmac), _) = bed.macs();
    let src = SocketAddrV4::new(CLIENT, 40001);
    let tcp = Tcp::new(src, bed.broker(), flags::ACK).macs(smac, dmac).payload(PAYLOAD.to_vec());
    let frame = generator_frame(&tcp)?;
    let (broker, snat) = (bed.broker(), SocketAddrV4::new(bed.snat_ip(), 40001));
    bed.sink().expect(snat, broker)?;
    let ifindex = bed.gen.ifindex("g0")?;
    bed.gen.enter(move || Generator::new(ifindex, frame)?.send(10_000))??;
    let c = bed.sink().counts()?;
    assert_eq!(c.delivered, 0, "untranslated frames were counted as delivered");
    assert!(c.untranslated > 0, "the routed frames did not reach the sink at all");
    // The same frames, expected as they are, count.
    bed.sink().expect(src, broker)?;
    bed.gen.enter(move || Generator::new(ifindex, frame)?.send(10_000))??;
    assert!(bed.sink().counts()?.delivered > 0, "routed frames were not counted");
    Ok(())
}
