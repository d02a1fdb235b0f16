//! forwarder: an in-kernel TCP port forwarder for NAT VMs.
//!
//! The binary (`main.rs`) only parses arguments; everything it does lives here so the
//! integration tests can drive the same code.

pub mod config;
pub mod daemon;
pub mod datapath;
pub mod ebpf;
pub mod gc;
pub mod netif;
pub mod plan;
pub mod stats;
pub mod sysctl;
