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
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>() as u32,
            )
        };
        let err = (rc < 0).then(io::Error::last_os_error);
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
