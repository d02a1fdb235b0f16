//! forwarder: an in-kernel TCP port forwarder for NAT VMs.
//!
//! The binary (`main.rs`) only parses arguments; everything it does lives here so the
//! integration tests can drive the same code.

pub mod accept;
pub mod attach_watch;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod dns_refresh;
pub mod drop_watch;
pub mod ebpf;
pub mod flows;
pub mod gc;
pub mod health;
pub mod kafka;
pub mod kernel_log;
pub mod link_info;
pub mod live;
pub mod metrics;
pub mod netif;
pub mod nexthop_watch;
pub mod ops;
pub mod pins;
pub mod plan;
pub mod state;
pub mod stats;
pub mod sysctl;
pub mod ticker;
pub mod unload;
