//! forwarder: an in-kernel TCP port forwarder for NAT VMs.
//!
//! The binary (`main.rs`) only parses arguments; everything it does lives here so the
//! integration tests can drive the same code.
//!
//! The modules are layers, each using only those before it:
//! - [`host`]: the machine outside the maps (interfaces, sysctls, capabilities, the
//!   resolver, clocks);
//! - [`config`]: the file, read with places and validated;
//! - [`plan`]: a config resolved against this host into map values;
//! - [`datapath`]: the loaded program, its attachments, pins and typed map handles;
//! - [`daemon`]: `forwarder run`, its tasks and the state they share;
//! - [`cli`]: what each command does and prints.
//!
//! Beside them, [`kafka`] (`kafka discover / check`, on config and host) and [`ops`] (the
//! doctor and the iptables import, which also read the daemon's status). [`error`] is the
//! step error the daemon and unload report.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod error;
pub mod host;
pub mod kafka;
pub mod ops;
pub mod plan;
