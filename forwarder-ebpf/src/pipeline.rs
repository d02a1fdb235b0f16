//! The packet's journey, shared by the XDP and TC entry points:
//! parse -> reply or original direction -> conntrack -> translate -> route -> rewrite -> send.

use crate::{
    conntrack::{self, Found, Transition},
    context::{PacketContext, Verdict},
    csum::CsumDelta,
    forward::{self, Route},
    icmp,
    maps::{ALLOWED_SOURCES, CONFIG, LISTEN_ADDRS, RULES},
    mss,
    nat::{self, Translation},
    parse::{self, Tcp, L4},
    stats,
};
use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::lpm_trie::Key};
use forwarder_common::{Config, Counter, FlowKey, LISTEN_ADDRS as LISTEN_MODE_ADDRS};
use network_types::ip::IpProto;

#[inline(always)]
pub fn process<C: PacketContext>(ctx: &C) -> Verdict {
    let Some(cfg) = CONFIG.get(0) else {
        return Verdict::Pass;
    };
    // Not configured yet (the daemon fills CONFIG after attaching): touch nothing.
    if cfg.layout_version == 0 {
        return Verdict::Pass;
    }
    match parse::parse(ctx) {
        Some(L4::Tcp(tcp)) => tcp_packet(ctx, &tcp, cfg),
        Some(L4::Icmp(ip)) => icmp::handle(ctx, &ip, cfg, now()),
        None => Verdict::Pass,
    }
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn tcp_packet<C: PacketContext>(ctx: &C, tcp: &Tcp, cfg: &Config) -> Verdict {
    let now = now();
    let key = FlowKey::new(tcp.ip.src, tcp.ip.dst, tcp.sport, tcp.dport, IpProto::Tcp as u8);

    // 1. Reply direction: only ports of the SNAT range can carry replies (the range is
    //    reserved, so no local socket uses it).
    let dport = u16::from_be(tcp.dport);
    if dport >= cfg.snat_port_min && dport <= cfg.snat_port_max {
        if let Some(found) = conntrack::lookup(&key, cfg, now) {
            if found.is_reply() {
                return established(ctx, tcp, cfg, &found, true, now);
            }
        }
    }

    // 2. Original direction of a tracked flow. Looked up before the rule, so a flow
    //    outlives the removal of its rule: `forwarder rule remove` stops new connections
    //    only. (This costs one hash lookup for the VM's own traffic, none for forwarded.)
    if let Some(found) = conntrack::lookup(&key, cfg, now) {
        if !found.is_reply() {
            return established(ctx, tcp, cfg, &found, false, now);
        }
    }

    // A rule's listen port, on a listen address.
    // SAFETY: RULES is only read here; the daemon replaces values whole.
    let Some(rule) = (unsafe { RULES.get(dport) }) else {
        return Verdict::Pass;
    };
    // SAFETY: LISTEN_ADDRS is only read.
    if cfg.listen_mode == LISTEN_MODE_ADDRS && unsafe { LISTEN_ADDRS.get(tcp.ip.dst) }.is_none() {
        return Verdict::Pass;
    }

    // 3. A new flow: only a SYN opens one; anything else of an unknown flow is the kernel's
    //    (it answers with a RST).
    if !tcp.is_syn() {
        return Verdict::Pass;
    }
    let rule_id = rule.rule_id;
    if cfg.allow_all_sources == 0 && ALLOWED_SOURCES.get(Key::new(32, tcp.ip.src)).is_none() {
        stats::inc(rule_id, Counter::NotAllowed);
        return Verdict::Pass;
    }
    let Some(reply_key) = nat::alloc_reply_key(&key, rule.target_addr, rule.target_port, cfg)
    else {
        stats::inc(rule_id, Counter::DropNoSnatPort);
        return Verdict::Drop;
    };
    if conntrack::create(&key, &reply_key, rule_id, tcp.ip.tot_len, now).is_err() {
        stats::inc(rule_id, Counter::DropTableFull);
        return Verdict::Drop;
    }
    stats::inc(rule_id, Counter::NewConns);
    let t = Translation::to_reverse_of(&reply_key);
    translate_and_send(ctx, tcp, cfg, &t, rule_id, false)
}

/// A packet of a tracked flow, in either direction.
#[inline(always)]
fn established<C: PacketContext>(
    ctx: &C,
    tcp: &Tcp,
    cfg: &Config,
    found: &Found,
    reply: bool,
    now: u64,
) -> Verdict {
    // SAFETY: master is a live map value for the rest of the program run.
    let master = unsafe { &mut *found.master };
    let rule_id = master.rule_id;
    let t = Translation::to_reverse_of(&found.peer());
    if conntrack::advance(master, tcp, reply, tcp.ip.tot_len, now) == Transition::Promote
        && found.table == conntrack::Table::Embryonic
    {
        conntrack::promote(found);
    }
    translate_and_send(ctx, tcp, cfg, &t, rule_id, reply)
}

#[inline(always)]
fn translate_and_send<C: PacketContext>(
    ctx: &C,
    tcp: &Tcp,
    cfg: &Config,
    t: &Translation,
    rule_id: u16,
    reply: bool,
) -> Verdict {
    let tot_len = ctx.fib_tot_len(tcp.ip.tot_len);
    let route = forward::route(ctx, IpProto::Tcp, t.src_addr, t.dst_addr, tot_len);
    if let Route::Unreachable = route {
        stats::inc(rule_id, Counter::DropNoRoute);
        return Verdict::Drop;
    }

    let mut extra = CsumDelta::new();
    if cfg.mss_clamp != 0 && tcp.has(parse::TCP_SYN) {
        if let Some(d) = mss::clamp(ctx, tcp, cfg.mss_clamp) {
            extra = d;
            stats::inc(rule_id, Counter::MssClamped);
        }
    }
    // SAFETY: the IP header was bounds-checked by the parser.
    let ttl = unsafe { (*tcp.ip.hdr).ttl };
    let direct = matches!(route, Route::Direct { .. }) && ttl > 1;
    nat::rewrite_tcp(ctx, tcp, t, extra, direct);

    let (packets, bytes) = if reply {
        (Counter::ReplyPackets, Counter::ReplyBytes)
    } else {
        (Counter::Packets, Counter::Bytes)
    };
    stats::add(rule_id, packets, ctx.segments());
    stats::add(rule_id, bytes, tcp.ip.tot_len as u64);
    match route {
        Route::Direct { ifindex, smac, dmac } if direct => forward::send(ctx, ifindex, smac, dmac),
        _ => {
            stats::inc(rule_id, Counter::SlowPath);
            Verdict::Pass
        }
    }
}
