//! Facts about and changes to the host the daemon runs on, outside the BPF maps: its
//! interfaces and addresses (`netif`), the sysctls forwarding needs (`sysctl`), and the
//! capabilities the daemon holds (`capabilities`).

pub mod capabilities;
pub mod netif;
pub mod sysctl;
