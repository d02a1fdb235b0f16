//! Unit tests of `check.rs`: message sizes, batches, rates.
use super::*;

#[test]
fn batches_respect_both_limits() {
    let small: Vec<Vec<u8>> = (0..2500).map(|_| vec![0u8; 10]).collect();
    let b = batches(&small);
    assert_eq!(b.iter().map(|s| s.len()).collect::<Vec<_>>(), vec![1000, 1000, 500]);
    let big: Vec<Vec<u8>> = (0..5).map(|_| vec![0u8; 200 << 10]).collect();
    assert_eq!(batches(&big).iter().map(|s| s.len()).collect::<Vec<_>>(), vec![2, 2, 1]);
    let huge = vec![vec![0u8; 600 << 10]];
    assert_eq!(batches(&huge).len(), 1);
    assert!(batches(&[]).is_empty());
}

#[test]
fn payloads_are_sized_and_distinct() {
    let a = payload("forwarder-check 1-2 broker 1 ", 0, 1024);
    let b = payload("forwarder-check 1-2 broker 1 ", 1, 1024);
    assert_eq!((a.len(), b.len()), (1024, 1024));
    assert_ne!(a, b);
    assert!(a.starts_with(b"forwarder-check 1-2 broker 1 00000000 "));
    assert_eq!(payload("p ", 7, 64).len(), 64);
}

#[test]
fn rates_and_times_are_rounded() {
    assert_eq!(ms(Duration::from_micros(1234)), 1.23);
    assert_eq!(mb_per_s(2_000_000, Duration::from_secs(1)), Some(2.0));
    assert_eq!(mb_per_s(0, Duration::from_secs(1)), None);
}
