//! `cargo xtask bench --quick` as a test: the packet-rate bed sets up every contender in
//! every case (both shapes, 64-byte frames and a stream) and each one delivers the
//! generator's frames, translated. No speed is
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
    assert_eq!(outcomes.len(), opts.cases.len() * opts.contenders.len());
    for o in &outcomes {
        let what = format!("{:?} {:?} {}", o.shape, o.load, o.contender.name());
        if let Some(why) = &o.unavailable {
            assert_eq!(o.contender, Contender::NftFlowtable, "{what} was skipped: {why}");
            assert!(why.starts_with("not available on this kernel"), "{what}: {why}");
            // Straight to stderr, past the test harness's capture: a skip must be seen.
            let _ = writeln!(std::io::stderr(), "bench_quick: SKIPPED {what}: {why}");
            continue;
        }
        assert_eq!(o.samples.len(), opts.rounds, "{what}: samples");
        let frames = opts.frames_for(o.load);
        for s in &o.samples {
            assert!(s.delivered > 0, "{what} delivered nothing of {} frames", s.sent);
            assert_eq!(s.sent, frames, "{what}: the send window was cut short");
        }
    }
    let md = rate::report::markdown(&opts, &rate::report::rows(&outcomes), None);
    println!("{md}");
}

/// The sink's guard: frames that arrive but are not translated as expected are not counted
/// as delivered, so a contender that passes frames on unchanged cannot look fast. Plain
/// routing forwards them unchanged while the sink expects the NAT VM's source address.
/// Checked with every sender this kernel runs: the packet socket always, live frames where
/// allowed (the packet socket is then not the chosen one, and is tested here alone).
#[test]
fn untranslated_frames_are_not_counted_as_delivered() -> anyhow::Result<()> {
    use forwarder_tests::{
        bench::rate::{
            bed::{Bed, Shape, CLIENT},
            send::{generator_frame, PAYLOAD},
            sender::{Sender, SenderKind},
        },
        packet::{flags, Tcp},
    };
    use std::net::SocketAddrV4;

    forwarder_tests::require_root();
    let mut kinds = vec![SenderKind::PacketSocket];
    if SenderKind::chosen()? == SenderKind::LiveFrames {
        kinds.push(SenderKind::LiveFrames);
    }
    for kind in kinds {
        let mut bed = Bed::new(Shape::Hairpin, "rq")?;
        let ((smac, dmac), _) = bed.macs();
        let src = SocketAddrV4::new(CLIENT, 40001);
        let tcp =
            Tcp::new(src, bed.broker(), flags::ACK).macs(smac, dmac).payload(PAYLOAD.to_vec());
        let frame = generator_frame(&tcp)?;
        let (broker, snat) = (bed.broker(), SocketAddrV4::new(bed.snat_ip(), 40001));
        bed.sink().expect(snat, broker)?;
        let ifindex = bed.gen.ifindex("g0")?;
        let send = move || -> anyhow::Result<u64> {
            Ok(Sender::repeat(kind, ifindex, frame)?.send(10_000)?.offered)
        };
        assert_eq!(bed.gen.enter(send)??, 10_000, "{kind:?}: frames offered");
        let c = bed.sink().counts()?;
        assert_eq!(c.delivered, 0, "{kind:?}: untranslated frames were counted as delivered");
        assert!(c.untranslated > 0, "{kind:?}: the routed frames did not reach the sink at all");
        // The same frames, expected as they are, count.
        bed.sink().expect(src, broker)?;
        bed.gen.enter(send)??;
        let delivered = bed.sink().counts()?.delivered;
        assert!(delivered > 0, "{kind:?}: routed frames were not counted");
        eprintln!("{kind:?}: {delivered} of 10000 routed frames counted");
    }
    Ok(())
}

/// The generator's stream mode makes the segments of a bulk transfer: every frame a valid
/// MTU segment (checksums verified by etherparse), its sequence number the template's plus
/// a whole number of segments, consecutive frames consecutive segments, cycling over
/// STREAM_CYCLE of them.
#[test]
fn stream_frames_are_consecutive_valid_segments() -> anyhow::Result<()> {
    use forwarder_tests::{
        bench::rate::{
            load::{STREAM_CYCLE, STREAM_PAYLOAD},
            progs::{Generator, MAX_FRAME_LEN},
        },
        packet::{flags, parse_tcp, Tcp},
    };
    use std::net::{Ipv4Addr, SocketAddrV4};

    forwarder_tests::require_root();
    let (src, dst) = (
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 40001),
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 4), 9092),
    );
    let payload = rate::Load::Stream.payload();
    let tcp = Tcp::new(src, dst, flags::ACK).seq(u32::MAX - 5000).payload(payload.clone());
    let frame = tcp.frame();
    assert_eq!(frame.len(), MAX_FRAME_LEN);
    let step = STREAM_PAYLOAD as u32;
    // The frame counter is per CPU: one pinned thread sees consecutive numbers.
    std::thread::spawn(move || -> anyhow::Result<()> {
        let mut set = nix::sched::CpuSet::new();
        set.set(0)?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
        let gen = Generator::stream(1, frame, step, STREAM_CYCLE)?;
        let mut last: Option<u32> = None;
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..3 * STREAM_CYCLE {
            let (action, out) = gen.one()?;
            assert_eq!(action, 3, "XDP_TX");
            let got = parse_tcp(&out);
            assert_eq!((got.src(), got.dst()), (src, dst));
            assert_eq!(got.payload, payload, "payload");
            let k = got.tcp.sequence_number.wrapping_sub(tcp.seq);
            assert_eq!(k % step, 0, "seq {} is not a segment boundary", got.tcp.sequence_number);
            let k = k / step;
            assert!(k < STREAM_CYCLE, "segment {k} is outside the cycle");
            if let Some(prev) = last {
                assert_eq!(k, (prev + 1) % STREAM_CYCLE, "segment {k} after {prev}");
            }
            last = Some(k);
            seen.insert(k);
        }
        assert_eq!(seen.len() as u32, STREAM_CYCLE, "segments used: {seen:?}");
        Ok(())
    })
    .join()
    .expect("the generator thread")
}
