//! What each contender is configured with: iptables as `ip_fwd.sh` writes it, the nftables
//! equivalents, and the forwarder's config file.

use super::bed::Bed;
use crate::topology::instance_keys;

/// `ip_fwd.sh -i n0 -f 9092 -a 10.20.0.11 -b 9192`: iptables arguments, one rule each. The
/// MASQUERADE goes out of the interface towards the broker (n0 itself in the hairpin).
pub fn ip_fwd(bed: &Bed) -> [String; 2] {
    [
        format!(
            "-t nat -A PREROUTING -i n0 -p tcp -m tcp --dport {} -j DNAT --to-destination {}",
            bed.listen().port(),
            bed.broker()
        ),
        format!("-t nat -A POSTROUTING -o {} -j MASQUERADE", bed.out_iface()),
    ]
}

/// The same NAT in nftables: dnat in prerouting, masquerade in postrouting.
pub fn nft_nat(bed: &Bed) -> String {
    format!(
        "table ip bench_nat {{\n  \
           chain prerouting {{ type nat hook prerouting priority dstnat; \
             iifname \"n0\" tcp dport {} dnat to {}; }}\n  \
           chain postrouting {{ type nat hook postrouting priority srcnat; \
             oifname \"{}\" masquerade; }}\n}}\n",
        bed.listen().port(),
        bed.broker(),
        bed.out_iface()
    )
}

/// A flowtable on N's interfaces, and the rule that offloads every forwarded TCP flow to it
/// (the established flow's packets then skip the forward path and netfilter's hooks).
pub fn nft_flowtable(bed: &Bed) -> String {
    format!(
        "table ip bench_ft {{\n  \
           flowtable ft {{ hook ingress priority 0; devices = {{ {} }}; }}\n  \
           chain forward {{ type filter hook forward priority 0; policy accept; \
             ip protocol tcp flow add @ft; }}\n}}\n",
        bed.nat_ifaces().join(", ")
    )
}

/// The forwarder's config: the bed's listen port to the broker, SNAT to N's address
/// towards the broker, sources from the client's subnet.
pub fn forwarder_config(bed: &Bed, mode: &str) -> String {
    let ifaces: Vec<String> = bed.nat_ifaces().iter().map(|i| format!("{i:?}")).collect();
    format!(
        "{}interface = [{}]\nmode = \"{mode}\"\nsnat_ip = \"{}\"\nsnat_ports = \"40000-59999\"\n\
         allowed_sources = [\"10.0.0.0/24\"]\n\n[[rule]]\nname = \"bench\"\nlisten = {}\n\
         target = \"{}\"\n",
        instance_keys(&bed.nat),
        ifaces.join(", "),
        bed.snat_ip(),
        bed.listen().port(),
        bed.broker()
    )
}
