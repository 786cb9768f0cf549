//! A repair's batch of keys may name gigabytes of values: the store hands
//! them over one at a time, and never holds them all at once.
//!
//! A test binary of its own, for its allocator: it counts the bytes
//! allocated and not yet freed, and the most there were.

use node::{
    store::{Record, Store},
    version::Version,
};
use peak_alloc::PeakAlloc;

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

/// The most the process held at once while `run` ran, above what it held
/// before. (This binary has one test, so nothing else runs meanwhile.)
fn peak_during(run: impl FnOnce()) -> usize {
    let before = ALLOCATOR.current_usage();
    ALLOCATOR.reset_peak_usage();
    run();
    ALLOCATOR.peak_usage() - before
}

const MIB: usize = 1024 * 1024;

#[test]
fn the_records_of_many_keys_are_read_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let keys: Vec<String> = (0..40).map(|i| format!("big/{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let record = Record {
            key: key.clone(),
            version: Version {
                wall_ms: 1_000 + i as u64,
                logical: 0,
                node: "n1".into(),
            },
            value: Some(vec![i as u8; MIB]),
            request_id: String::new(),
        };
        store.apply(&record).unwrap();
    }
    // Read once, so that what the database caches is cached before the count.
    store.for_each(|_| true).unwrap();

    // Named twice over, as a peer might: each is visited once.
    let named: Vec<String> = keys.iter().chain(&keys).cloned().collect();
    let mut visited = Vec::new();
    let peak = peak_during(|| {
        store
            .each_of(&named, |record| {
                assert_eq!(record.value.as_ref().map(Vec::len), Some(MIB));
                visited.push(record.version.wall_ms);
                true
            })
            .unwrap();
    });
    let expected: Vec<u64> = (0..40).map(|i| 1_000 + i).collect();
    assert_eq!(visited, expected);
    assert!(
        peak < 8 * MIB,
        "reading 40 values of 1 MiB held {} MiB at once",
        peak / MIB
    );

    // A visit that says stop ends the reading.
    let mut visits = 0;
    store
        .each_of(&keys, |_| {
            visits += 1;
            visits < 3
        })
        .unwrap();
    assert_eq!(visits, 3);
}
