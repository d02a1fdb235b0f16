//! An AF_PACKET socket that hands whole Ethernet frames straight to one interface's driver
//! (`PACKET_QDISC_BYPASS`), many per system call (`sendmmsg`): the sender where the kernel
//! refuses live-frames test runs (see `sender`).
//!
//! The socket is bound with protocol 0, so it receives nothing: a socket bound to
//! ETH_P_IP would get a copy of every frame of the interface, and that copy would be
//! counted as the contender's cost.

use anyhow::{ensure, Context, Result};
use std::{
    io,
    mem::{size_of, zeroed},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// Frames per `sendmmsg`: the kernel's NAPI_POLL_WEIGHT, as the live-frames runs' batch.
pub const BATCH: usize = 64;

pub struct PacketSocket {
    fd: OwnedFd,
    /// Where every frame goes: the interface, as an AF_PACKET address.
    to: libc::sockaddr_ll,
}

/// What one `send` did with its frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handed {
    /// Taken by the driver.
    pub taken: u64,
    /// Refused because the driver's queue was stopped (ENOBUFS): a veth stops its queue
    /// while its peer's receive ring is full.
    pub refused: u64,
}

impl PacketSocket {
    /// Opens the socket on `ifindex` of the calling thread's network namespace.
    pub fn open(ifindex: u32) -> Result<PacketSocket> {
        // SAFETY: plain system call; the descriptor is owned below.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        ensure!(raw >= 0, "opening an AF_PACKET socket: {}", io::Error::last_os_error());
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        // SAFETY: the option value is a c_int that lives through the call.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        ensure!(rc == 0, "PACKET_QDISC_BYPASS: {}", io::Error::last_os_error());
        // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
        let mut to: libc::sockaddr_ll = unsafe { zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = ifindex as i32;
        let mut bound = to;
        bound.sll_protocol = 0;
        // SAFETY: `bound` is a sockaddr_ll of the length given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&bound as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        ensure!(
            rc == 0,
            "binding the packet socket to ifindex {ifindex}: {}",
            io::Error::last_os_error()
        );
        // Every frame is IPv4; the kernel reads the rest from the Ethernet header.
        to.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        Ok(PacketSocket { fd, to })
    }

    /// Hands `frames` to the driver, BATCH per system call. A frame the driver refuses is
    /// counted, not sent again: the caller decides what a refusal means.
    pub fn send(&self, frames: &[&[u8]]) -> Result<Handed> {
        let mut handed = Handed::default();
        for batch in frames.chunks(BATCH) {
            let mut rest = batch;
            while !rest.is_empty() {
                match self.sendmmsg(rest) {
                    Ok(n) => {
                        handed.taken += n as u64;
                        rest = &rest[n..];
                    }
                    // The first frame was refused: skip it, go on with the next.
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        handed.refused += 1;
                        rest = &rest[1..];
                    }
                    Err(e) => return Err(e).context("sendmmsg on the packet socket"),
                }
            }
        }
        Ok(handed)
    }

    /// One `sendmmsg` of at most BATCH frames: how many the kernel took (at least one).
    fn sendmmsg(&self, frames: &[&[u8]]) -> io::Result<usize> {
        let n = frames.len().min(BATCH);
        let mut iov: [libc::iovec; BATCH] =
            [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH];
        // SAFETY: mmsghdr is plain data; all zeroes is a valid (empty) value.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for i in 0..n {
            iov[i] =
                libc::iovec { iov_base: frames[i].as_ptr() as *mut _, iov_len: frames[i].len() };
            msgs[i].msg_hdr.msg_name = (&self.to as *const libc::sockaddr_ll) as *mut _;
            msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        loop {
            // SAFETY: `msgs[..n]` point at iovecs and an address that outlive the call; the
            // kernel only reads the frames.
            let rc = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
            if rc > 0 {
                return Ok(rc as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}
