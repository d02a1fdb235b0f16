//! Facts about and changes to the host the daemon runs on, outside the BPF maps: its
//! interfaces and addresses (`netif`), what their NICs do (`nic`), the sysctls forwarding needs (`sysctl`), and the
//! capabilities the daemon holds (`capabilities`), and names resolved with a timeout
//! (`resolve`), and the clocks (`clock`).

pub mod capabilities;
pub mod clock;
pub mod imds;
pub mod netif;
pub mod nic;
pub mod resolve;
pub mod sysctl;
