//! The packet's journey, shared by the XDP and TC entry points:
//! parse -> one conntrack lookup (original, reply or new) -> state machine if the packet can
//! change state -> translate -> next hop (cached in the flow) -> rewrite -> send. A TCP
//! datagram's later fragments take the way its first one took (`fragment`).

use crate::{
    conntrack::{self, Found, Lookup, Transition},
    context::{PacketContext, Verdict},
    csum::CsumDelta,
    events,
    forward::{self, Route},
    fragment, icmp,
    maps::{ALLOWED_SOURCES, CONFIG, LISTEN_ADDRS, RULES},
    mss,
    nat::{self, Translation},
    parse::{self, Frag, Tcp, L4},
    stats,
};
use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, maps::lpm_trie::Key};
use core::mem::MaybeUninit;
use forwarder_common::{
    Config, Counter, FlowKey, NextHop, CONFIG_FLAG_MIGRATING, LISTEN_ADDRS as LISTEN_MODE_ADDRS,
    REFRESH_NS,
};
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
        Some(L4::TcpFragment(ip)) => fragment::later(ctx, &ip),
        None => Verdict::Pass,
    }
}

/// The coarse clock: a packet's timestamp only has to be good to a second (REFRESH_NS), and
/// it is read on every packet.
#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// What a packet of ours is rewritten to, whose counters it goes to, and the next hop cache
/// of the half it matched (null: none, as for a new flow's first packet).
struct Forward {
    t: Translation,
    rule_id: u16,
    reply: bool,
    nexthop: *mut NextHop,
}

#[inline(always)]
fn tcp_packet<C: PacketContext>(ctx: &C, tcp: &Tcp, cfg: &Config) -> Verdict {
    let now = now();
    let key = FlowKey::new(tcp.ip.src, tcp.ip.dst, tcp.sport, tcp.dport, IpProto::Tcp as u8);
    // A flow's next hop is cached in its half; a packet whose half is new or just moved
    // uses this one, and the flow's next packet caches it. Zeroed only when used, so the
    // packets of an established flow do not pay for it.
    let mut scratch = MaybeUninit::<NextHop>::uninit();
    // A tracked flow first, in either direction. The original direction is looked up before
    // the rule, so a flow outlives the removal of its rule: `forwarder rule remove` stops
    // new connections only.
    let looked = conntrack::lookup(&key, cfg, now);
    // One call site each, so the program holds one copy of each path.
    let step = match &looked {
        Lookup::New => new_flow(tcp, cfg, &key, now),
        Lookup::Original(found) | Lookup::Reply(found) => {
            tracked(ctx, tcp, found, matches!(looked, Lookup::Reply(_)), now)
        }
    };
    match step {
        Ok(f) => {
            let nexthop = if f.nexthop.is_null() {
                scratch.write(NextHop::default())
            } else {
                // SAFETY: a non-null `nexthop` is in the matched half, a map value that
                // lives for the rest of the program run.
                unsafe { &mut *f.nexthop }
            };
            if tcp.ip.frag == Frag::First {
                fragment::remember_first(&tcp.ip, &f.t, f.rule_id, f.reply);
            }
            translate_and_send(ctx, tcp, cfg, &f.t, f.rule_id, f.reply, nexthop)
        }
        Err(verdict) => verdict,
    }
}

/// A packet no flow claims: a SYN to a rule's listen port opens one.
#[inline(always)]
fn new_flow(tcp: &Tcp, cfg: &Config, key: &FlowKey, now: u64) -> Result<Forward, Verdict> {
    // A rule's listen port, on a listen address.
    let dport = u16::from_be(tcp.dport);
    // SAFETY: RULES is only read here; the daemon replaces values whole.
    let Some(rule) = (unsafe { RULES.get(dport) }) else {
        return Err(unclaimed(tcp, cfg));
    };
    // SAFETY: LISTEN_ADDRS is only read.
    if cfg.listen_mode == LISTEN_MODE_ADDRS && unsafe { LISTEN_ADDRS.get(tcp.ip.dst) }.is_none() {
        return Err(Verdict::Pass);
    }
    // An upgrade is copying the flows: this one may be among those not copied yet.
    if cfg.flags & CONFIG_FLAG_MIGRATING != 0 {
        return Err(Verdict::Drop);
    }
    // Only a SYN opens a flow; anything else of an unknown flow is the kernel's (it answers
    // with a RST).
    if !tcp.is_syn() {
        return Err(Verdict::Pass);
    }
    let rule_id = rule.rule_id;
    if cfg.allow_all_sources == 0 && ALLOWED_SOURCES.get(Key::new(32, tcp.ip.src)).is_none() {
        stats::inc(rule_id, Counter::NotAllowed);
        return Err(Verdict::Pass);
    }
    // At max_flows a new flow is refused, as netfilter does at nf_conntrack_max: no live
    // flow is evicted to make room.
    if !conntrack::has_room(cfg) {
        stats::inc(rule_id, Counter::DropTableFull);
        events::table_full(rule_id, now);
        return Err(Verdict::Drop);
    }
    let Some(reply_key) = nat::alloc_reply_key(key, rule.target_addr, rule.target_port, cfg, now)
    else {
        stats::inc(rule_id, Counter::DropNoSnatPort);
        events::no_snat_port(rule_id, rule.target_addr, rule.target_port, now);
        return Err(Verdict::Drop);
    };
    if conntrack::create(key, &reply_key, rule_id, tcp.ip.tot_len, now).is_err() {
        stats::inc(rule_id, Counter::DropTableFull);
        return Err(Verdict::Drop);
    }
    stats::inc(rule_id, Counter::NewConns);
    let t = Translation::to_reverse_of(&reply_key);
    Ok(Forward { t, rule_id, reply: false, nexthop: core::ptr::null_mut() })
}

/// A packet to no rule's port that no flow claims: the kernel's, except while an upgrade
/// copies the flows, when one to the SNAT port range may be the reply of a flow not copied
/// yet (see `CONFIG_FLAG_MIGRATING`).
#[inline(always)]
fn unclaimed(tcp: &Tcp, cfg: &Config) -> Verdict {
    let port = u16::from_be(tcp.dport);
    if cfg.flags & CONFIG_FLAG_MIGRATING != 0
        && tcp.ip.dst == cfg.snat_addr
        && port >= cfg.snat_port_min
        && port <= cfg.snat_port_max
    {
        return Verdict::Drop;
    }
    Verdict::Pass
}

/// A packet of a tracked flow, in either direction: one entry, the one it matched, holds
/// what it needs; the state machine runs only for packets that can change the state.
#[inline(always)]
fn tracked<C: PacketContext>(
    ctx: &C,
    tcp: &Tcp,
    found: &Found,
    reply: bool,
    now: u64,
) -> Result<Forward, Verdict> {
    // SAFETY: a map value, valid for the rest of the program run.
    let half = unsafe { &mut *found.entry };
    let rule_id = half.rule_id;
    // This direction's own counters and timestamp: written by the CPU that receives it.
    half.packets += ctx.segments();
    half.bytes += tcp.ip.tot_len as u64;
    if now.saturating_sub(half.last_seen_ns) >= REFRESH_NS {
        half.last_seen_ns = now;
        // Re-check the route once per refresh, so a stale next hop cannot outlive a
        // second even while no daemon bumps the generation.
        half.nexthop.ifindex = 0;
    }
    let mut f = Forward {
        t: Translation::to_reverse_of(&half.peer),
        rule_id,
        reply,
        nexthop: &mut half.nexthop,
    };
    if conntrack::is_steady(found, tcp) || conntrack::track(found, tcp, reply) == Transition::Stay {
        return Ok(f);
    }
    // The handshake just completed: the flow moves to the established table. After a move
    // the matched entry is freed memory another flow may reuse, so nothing more is written
    // to it.
    if conntrack::promote(found).is_err() {
        // max_flows are established (handshakes that completed together took the last
        // places). The flow is forgotten and the packet goes to the kernel untranslated, as
        // for any unknown flow: it answers the client with a reset, and the target's next
        // packet to the SNAT port with another.
        conntrack::forget(found);
        stats::inc(rule_id, Counter::DropTableFull);
        events::table_full(rule_id, now);
        return Err(Verdict::Pass);
    }
    f.nexthop = core::ptr::null_mut();
    Ok(f)
}

#[inline(always)]
fn translate_and_send<C: PacketContext>(
    ctx: &C,
    tcp: &Tcp,
    cfg: &Config,
    t: &Translation,
    rule_id: u16,
    reply: bool,
    nexthop: &mut NextHop,
) -> Verdict {
    let route = forward::cached_or_lookup(ctx, nexthop, IpProto::Tcp, t, tcp.ip.tot_len);
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
    let direct = matches!(route, Route::Direct(_)) && ttl > 1;
    nat::rewrite_tcp(ctx, tcp, t, extra, direct);

    stats::forwarded(rule_id, reply, ctx.segments(), tcp.ip.tot_len as u64);
    match route {
        Route::Direct(hop) if direct => forward::send(ctx, &hop),
        _ => {
            stats::inc(rule_id, Counter::SlowPath);
            Verdict::Pass
        }
    }
}
