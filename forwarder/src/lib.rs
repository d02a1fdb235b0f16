//! forwarder: an in-kernel TCP port forwarder for NAT VMs.
//!
//! The binary (`main.rs`) only parses arguments; everything it does lives here so the
//! integration tests can drive the same code.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod error;
pub mod host;
pub mod kafka;
pub mod ops;
pub mod plan;
