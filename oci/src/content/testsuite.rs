//! The one test suite every [`ContentStore`] passes; `suite!` instantiates it per store.

use std::io::{Read, Write};

use super::*;
use crate::digest::Digest;

fn blob(store: &dyn ContentStore, data: &[u8]) -> Digest {
    store.put(data).unwrap()
}

pub fn put_then_read_back(store: &dyn ContentStore) {
    let d = blob(store, b"hello");
    assert_eq!(d, Digest::of(b"hello"));
    let mut out = String::new();
    store.reader(&d).unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(out, "hello");
    assert_eq!(store.info(&d).unwrap().unwrap().size, 5);
}

pub fn missing_blob_is_not_found(store: &dyn ContentStore) {
    let d = Digest::of(b"never written");
    assert!(store.info(&d).unwrap().is_none());
    assert!(matches!(store.reader(&d), Err(Error::BlobNotFound(_))));
    assert!(!store.delete(&d).unwrap());
}

pub fn wrong_digest_is_refused_and_invisible(store: &dyn ContentStore) {
    let mut w = store.writer(Algorithm::Sha256).unwrap();
    w.write_all(b"actual").unwrap();
    let claimed = Digest::of(b"claimed");
    let err = w.commit(Expected { digest: Some(&claimed), size: None }).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(store.info(&claimed).unwrap().is_none());
    assert!(store.info(&Digest::of(b"actual")).unwrap().is_none());
}

pub fn wrong_size_is_refused(store: &dyn ContentStore) {
    let mut w = store.writer(Algorithm::Sha256).unwrap();
    w.write_all(b"12345").unwrap();
    let d = Digest::of(b"12345");
    let err = w.commit(Expected::exactly(&d, 4)).unwrap_err();
    assert!(matches!(err, Error::SizeMismatch { expected: 4, actual: 5, .. }), "{err}");
    assert!(store.info(&d).unwrap().is_none());
}

pub fn aborted_writer_leaves_nothing(store: &dyn ContentStore) {
    let mut w = store.writer(Algorithm::Sha256).unwrap();
    w.write_all(b"half a blob").unwrap();
    assert_eq!(w.written(), 11);
    w.abort().unwrap();
    let mut n = 0;
    store
        .walk(&mut |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(n, 0);
}

pub fn two_writers_of_one_blob(store: &dyn ContentStore) {
    let data = vec![42u8; 1 << 20];
    let d = Digest::of(&data);
    let mut a = store.writer(Algorithm::Sha256).unwrap();
    let mut b = store.writer(Algorithm::Sha256).unwrap();
    for chunk in data.chunks(4096) {
        a.write_all(chunk).unwrap();
        b.write_all(chunk).unwrap();
    }
    assert_eq!(a.commit(Expected::exactly(&d, data.len() as u64)).unwrap(), d);
    assert_eq!(b.commit(Expected::exactly(&d, data.len() as u64)).unwrap(), d);
    assert_eq!(store.read_small(&d, 1 << 21).unwrap(), data);
}

pub fn concurrent_writers_from_threads(store: &(dyn ContentStore + Sync)) {
    std::thread::scope(|s| {
        for i in 0..8u8 {
            s.spawn(move || {
                let data = vec![i % 2; 300_000];
                let d = Digest::of(&data);
                let mut w = store.writer(Algorithm::Sha256).unwrap();
                w.write_all(&data).unwrap();
                assert_eq!(w.commit(Expected::exactly(&d, 300_000)).unwrap(), d);
            });
        }
    });
    let mut n = 0;
    store
        .walk(&mut |info| {
            assert_eq!(info.size, 300_000);
            n += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(n, 2);
}

pub fn sha512_blobs(store: &dyn ContentStore) {
    let mut w = store.writer(Algorithm::Sha512).unwrap();
    w.write_all(b"five-twelve").unwrap();
    let d = w.commit(Expected::ANY).unwrap();
    assert_eq!(d.algorithm(), Algorithm::Sha512);
    assert_eq!(store.read_small(&d, 100).unwrap(), b"five-twelve");
}

pub fn delete_and_walk(store: &dyn ContentStore) {
    let a = blob(store, b"a");
    let b = blob(store, b"b");
    let mut seen = Vec::new();
    store
        .walk(&mut |i| {
            seen.push(i.digest);
            Ok(())
        })
        .unwrap();
    seen.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(seen, want);
    assert!(store.delete(&a).unwrap());
    assert!(!store.contains(&a).unwrap());
    assert!(store.contains(&b).unwrap());
}

pub fn read_small_caps_and_verifies(store: &dyn ContentStore) {
    let d = blob(store, b"0123456789");
    assert!(store.read_small(&d, 9).is_err());
    assert_eq!(store.read_small(&d, 10).unwrap(), b"0123456789");
}

/// Instantiates every suite function as a `#[test]` for one store constructor.
macro_rules! suite {
    ($modname:ident, $make:expr) => {
        mod $modname {
            #[allow(unused_imports)]
            use super::*;
            suite!(@tests $make; put_then_read_back, missing_blob_is_not_found, wrong_digest_is_refused_and_invisible,
                wrong_size_is_refused, aborted_writer_leaves_nothing, two_writers_of_one_blob,
                concurrent_writers_from_threads, sha512_blobs, delete_and_walk, read_small_caps_and_verifies);
        }
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                let (store, _guard) = $make;
                crate::content::testsuite::$name(&store);
            }
        )*
    };
}

suite!(memory, (MemoryStore::new(), ()));
suite!(local, {
    let dir = tempfile::tempdir().unwrap();
    (LocalStore::open(dir.path()).unwrap(), dir)
});

#[test]
fn local_store_leaves_no_ingest_files_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let mut w = store.writer(Algorithm::Sha256).unwrap();
    w.write_all(b"x").unwrap();
    let bad = Digest::of(b"y");
    assert!(w.commit(Expected { digest: Some(&bad), size: None }).is_err());
    store.put(b"z").unwrap();
    assert_eq!(std::fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
}
