//! Whole-table reads with BPF_MAP_LOOKUP_BATCH, for the sweep and the flow listings.
//!
//! A key walk (`get_next_key`, what aya's map iterators do) asks for the key after the one
//! it stands on, and the kernel starts again from the first bucket when that key was
//! deleted meanwhile. Under a SYN flood the LRU deletes all the time, so a key walk of the
//! embryonic table keeps starting over and may never end. A batch read keeps a bucket
//! cursor in the kernel instead: each bucket is read once, whatever happens to the keys,
//! and a whole table costs a few hundred system calls instead of two per entry. aya has no
//! batch API; this is the one system call by hand.

use aya::{
    maps::{IterableMap, MapData},
    Pod,
};
use std::{
    io,
    mem::MaybeUninit,
    os::fd::{AsFd, AsRawFd},
};

/// `union bpf_attr`'s `batch` member (linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries asked for per call; more than any one bucket holds.
const CHUNK: usize = 4096;

/// A whole table reads at most this many times its capacity in entries (those that arrive
/// during the read are read too), so a read ends while the table churns.
const WALK_BOUND: usize = 2;

/// Every entry of the conntrack table `map` (named `name` in errors), bounded by its
/// capacity, and that capacity: what the sweep and the flow listings read.
pub fn table<M, K, V>(
    name: &'static str,
    map: &M,
) -> Result<(Vec<(K, V)>, usize), crate::datapath::handles::MapAccessError>
where
    M: IterableMap<K, V>,
    K: Pod,
    V: Pod,
{
    use crate::datapath::handles::{of, MapAccessError};
    let capacity = map.map().info().map_err(of(name))?.max_entries() as usize;
    let entries = entries(map, capacity.saturating_mul(WALK_BOUND))
        .map_err(|e| MapAccessError::Batch(name, e))?;
    Ok((entries, capacity))
}

/// Every entry of the hash map `map` (plain or LRU), at most `limit` of them.
pub fn entries<M, K, V>(map: &M, limit: usize) -> io::Result<Vec<(K, V)>>
where
    M: IterableMap<K, V>,
    K: Pod,
    V: Pod,
{
    read_all(map.map(), limit)
}

fn read_all<K: Pod, V: Pod>(map: &MapData, limit: usize) -> io::Result<Vec<(K, V)>> {
    let fd = map.fd().as_fd().as_raw_fd();
    let mut keys: Vec<MaybeUninit<K>> = (0..CHUNK).map(|_| MaybeUninit::uninit()).collect();
    let mut values: Vec<MaybeUninit<V>> = (0..CHUNK).map(|_| MaybeUninit::uninit()).collect();
    let mut out = Vec::new();
    // For hash maps the cursor is a bucket index (a u32).
    let (mut cursor, mut next) = (0u32, 0u32);
    let mut first = true;
    while out.len() < limit {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &cursor as *const u32 as u64 },
            out_batch: &mut next as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd as u32,
            ..Default::default()
        };
        // SAFETY: attr points at buffers of CHUNK keys and values and at two u32 cursors,
        // all live across the call; the kernel writes at most `count` entries.
        let err = unsafe { bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) }.err();
        // The kernel says how many it filled, also with ENOENT (the last ones).
        let filled = (attr.count as usize).min(CHUNK);
        for i in 0..filled {
            // SAFETY: the kernel filled the first `filled` keys and values.
            out.push(unsafe { (keys[i].assume_init(), values[i].assume_init()) });
        }
        match err {
            None => {}
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Some(e) => return Err(e),
        }
        cursor = next;
        first = false;
    }
    out.truncate(limit);
    Ok(out)
}

const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

/// `union bpf_attr` for BPF_MAP_GET_NEXT_KEY.
#[repr(C)]
#[derive(Default)]
struct NextKeyAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    next_key: u64,
}

/// How many keys the hash map holds, walking keys of `key_size` bytes without knowing the
/// value type (a newer layout's map); at most its capacity twice, like [`table`].
pub fn count_keys(map: &MapData, key_size: usize) -> io::Result<usize> {
    let fd = map.fd().as_fd().as_raw_fd();
    let limit = map.info().map(|i| i.max_entries() as usize).unwrap_or(usize::MAX);
    let limit = limit.saturating_mul(WALK_BOUND);
    let (mut key, mut next) = (vec![0u8; key_size], vec![0u8; key_size]);
    let mut count = 0;
    let mut first = true;
    while count < limit {
        let mut attr = NextKeyAttr {
            map_fd: fd as u32,
            key: if first { 0 } else { key.as_ptr() as u64 },
            next_key: next.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: both buffers hold key_size bytes and live across the call.
        if let Err(e) = unsafe { bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) } {
            return if e.raw_os_error() == Some(libc::ENOENT) { Ok(count) } else { Err(e) };
        }
        count += 1;
        std::mem::swap(&mut key, &mut next);
        first = false;
    }
    Ok(count)
}

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;

/// `union bpf_attr` for BPF_MAP_LOOKUP_ELEM.
#[repr(C)]
#[derive(Default)]
struct LookupAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The value under `key` as bytes, whatever its type (another layout's CONFIG).
pub fn lookup_bytes(map: &MapData, key: &[u8], value_size: usize) -> io::Result<Vec<u8>> {
    let mut value = vec![0u8; value_size];
    let mut attr = LookupAttr {
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: key and value buffers of the map's sizes, live across the call.
    unsafe { bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) }?;
    Ok(value)
}

/// The bpf(2) system call with `attr`, the command's member of `union bpf_attr`.
///
/// # Safety
/// Every pointer in `attr` must point at memory of the size the command reads or writes,
/// live across the call.
unsafe fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<()> {
    // SAFETY: the caller's promise; the kernel reads size_of::<A>() bytes of attr.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, size_of::<A>() as u32) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
