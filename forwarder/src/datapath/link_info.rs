//! What the kernel says about a pinned BPF link: the program it runs and the interface it
//! is attached to. Someone else can detach a link (`bpftool link detach`): the link and its
//! pin stay, but its interface becomes 0 and no packet reaches the program. aya's
//! `LinkInfo` does not carry the interface, so this asks `BPF_OBJ_GET_INFO_BY_FD` itself.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

// Commands of bpf(2) (linux/bpf.h, enum bpf_cmd).
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The attachment of one link as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkTarget {
    pub link_id: u32,
    pub prog_id: u32,
    /// The interface of an XDP or TCX link; 0 once detached.
    pub ifindex: u32,
}

/// `bpf_link_info` up to the interface of its `xdp` and `tcx` members: type, id, prog_id,
/// then the union, 8-byte aligned, whose first field is the ifindex for both. The buffer is
/// larger than the kernel's struct; the kernel fills what it has and leaves the rest zero.
#[repr(C, align(8))]
struct RawLinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    ifindex: u32,
    _rest: [u8; 108],
}
const _: () = assert!(std::mem::offset_of!(RawLinkInfo, ifindex) == 16);

/// The attributes of BPF_OBJ_GET (`pathname`, `bpf_fd`, `file_flags`).
#[repr(C)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// The attributes of BPF_OBJ_GET_INFO_BY_FD (`info.bpf_fd`, `info_len`, `info`).
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The link pinned at `path`, and what it is attached to now.
pub fn pinned(path: &Path) -> io::Result<LinkTarget> {
    let fd = open_pinned(path)?;
    target(&fd)
}

fn open_pinned(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let attr = ObjGetAttr { pathname: c.as_ptr() as u64, bpf_fd: 0, file_flags: 0 };
    // SAFETY: `attr` is a valid BPF_OBJ_GET attribute block of the size passed, and the
    // path it points to lives until the call returns.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, &attr as *const ObjGetAttr, size_of_val(&attr))
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn target(fd: &OwnedFd) -> io::Result<LinkTarget> {
    let mut info =
        RawLinkInfo { link_type: 0, id: 0, prog_id: 0, _pad: 0, ifindex: 0, _rest: [0; 108] };
    let attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<RawLinkInfo>() as u32,
        info: &mut info as *mut RawLinkInfo as u64,
    };
    // SAFETY: `attr` is a valid attribute block of the size passed; `info` is writable for
    // `info_len` bytes and outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &attr as *const InfoAttr,
            size_of_val(&attr),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(LinkTarget { link_id: info.id, prog_id: info.prog_id, ifindex: info.ifindex })
}
