//! The operator's tools that look at the host rather than run the forwarder: `doctor`
//! (what keeps traffic from flowing here) and `import_iptables` (the rules `ip_fwd.sh` left
//! in iptables, as `[[rule]]` blocks). `netfilter` reads the host's iptables and nft rules
//! for both.

pub mod doctor;
pub mod import_iptables;
pub mod netfilter;
