//! The one test suite every [`StorageDriver`] passes; `suite!` instantiates it per driver
//! (fs and memory here; the S3 driver runs it against a real S3 server).

use bytes::Bytes;
use futures_util::TryStreamExt;

use super::*;

async fn read_all(d: &dyn StorageDriver, path: &str, offset: u64) -> Vec<u8> {
    let chunks: Vec<Bytes> = d.read(path, offset).await.unwrap().try_collect().await.unwrap();
    chunks.concat()
}

pub async fn put_get_stat(d: &dyn StorageDriver) {
    d.put("/a/b/c", Bytes::from_static(b"hello")).await.unwrap();
    assert_eq!(&d.get("/a/b/c").await.unwrap()[..], b"hello");
    let info = d.stat("/a/b/c").await.unwrap();
    assert_eq!((info.size, info.is_dir), (5, false));
    assert!(d.stat("/a/b").await.unwrap().is_dir);
    d.put("/a/b/c", Bytes::from_static(b"replaced")).await.unwrap();
    assert_eq!(&d.get("/a/b/c").await.unwrap()[..], b"replaced");
}

pub async fn missing_paths_are_not_found(d: &dyn StorageDriver) {
    assert!(d.get("/nope").await.unwrap_err().is_not_found());
    assert!(d.stat("/nope").await.unwrap_err().is_not_found());
    assert!(d.list("/nope").await.unwrap_err().is_not_found());
    assert!(d.delete("/nope").await.unwrap_err().is_not_found());
    assert!(d.read("/nope", 0).await.err().unwrap().is_not_found());
}

pub async fn read_from_an_offset(d: &dyn StorageDriver) {
    d.put("/r", Bytes::from_static(b"0123456789")).await.unwrap();
    assert_eq!(read_all(d, "/r", 0).await, b"0123456789");
    assert_eq!(read_all(d, "/r", 7).await, b"789");
}

pub async fn list_direct_children_sorted(d: &dyn StorageDriver) {
    for p in ["/l/b/x", "/l/a", "/l/c/y/z", "/other"] {
        d.put(p, Bytes::from_static(b".")).await.unwrap();
    }
    assert_eq!(d.list("/l").await.unwrap(), ["a", "b", "c"]);
    assert_eq!(d.list("/l/c").await.unwrap(), ["y"]);
}

pub async fn delete_removes_trees(d: &dyn StorageDriver) {
    d.put("/t/1/a", Bytes::from_static(b".")).await.unwrap();
    d.put("/t/1/b/c", Bytes::from_static(b".")).await.unwrap();
    d.put("/t/2", Bytes::from_static(b".")).await.unwrap();
    d.delete("/t/1").await.unwrap();
    assert!(d.get("/t/1/b/c").await.unwrap_err().is_not_found());
    assert_eq!(d.list("/t").await.unwrap(), ["2"]);
}

pub async fn rename_replaces_the_target(d: &dyn StorageDriver) {
    d.put("/m/from", Bytes::from_static(b"new")).await.unwrap();
    d.put("/m/to", Bytes::from_static(b"old")).await.unwrap();
    d.rename("/m/from", "/m/to").await.unwrap();
    assert_eq!(&d.get("/m/to").await.unwrap()[..], b"new");
    assert!(d.get("/m/from").await.unwrap_err().is_not_found());
}

pub async fn writer_resumes_after_close(d: &dyn StorageDriver) {
    let big = vec![7u8; 3 * 1024 * 1024 + 17];
    let mut w = d.writer("/u/data", false).await.unwrap();
    w.write(Bytes::from_static(b"abc")).await.unwrap();
    w.write(Bytes::from(big.clone())).await.unwrap();
    assert_eq!(w.size(), 3 + big.len() as u64);
    w.close().await.unwrap();
    // A new writer (as another process would open it) continues where the first stopped.
    let mut w = d.writer("/u/data", true).await.unwrap();
    assert_eq!(w.size(), 3 + big.len() as u64);
    w.write(Bytes::from_static(b"xyz")).await.unwrap();
    w.commit().await.unwrap();
    let all = read_all(d, "/u/data", 0).await;
    assert_eq!(all.len(), 6 + big.len());
    assert_eq!(&all[..3], b"abc");
    assert_eq!(&all[all.len() - 3..], b"xyz");
}

pub async fn writer_cancel_discards(d: &dyn StorageDriver) {
    let mut w = d.writer("/c/data", false).await.unwrap();
    w.write(Bytes::from_static(b"junk")).await.unwrap();
    w.close().await.unwrap();
    let w = d.writer("/c/data", true).await.unwrap();
    w.cancel().await.unwrap();
    assert!(d.get("/c/data").await.unwrap_err().is_not_found());
}

pub async fn empty_file_commits(d: &dyn StorageDriver) {
    let w = d.writer("/e/data", false).await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(d.stat("/e/data").await.unwrap().size, 0);
}

pub async fn refuses_escaping_paths(d: &dyn StorageDriver) {
    for bad in ["relative", "/a/../b", "/a//b", "/", "/a/./b"] {
        assert!(matches!(d.put(bad, Bytes::new()).await, Err(DriverError::InvalidPath(_))), "{bad}");
    }
}

/// Instantiates every suite function as a `#[tokio::test]` for one driver constructor.
#[macro_export]
macro_rules! driver_suite {
    ($modname:ident, $make:expr) => {
        mod $modname {
            #[allow(unused_imports)]
            use super::*;
            $crate::driver_suite!(@tests $make; put_get_stat, missing_paths_are_not_found, read_from_an_offset,
                list_direct_children_sorted, delete_removes_trees, rename_replaces_the_target,
                writer_resumes_after_close, writer_cancel_discards, empty_file_commits, refuses_escaping_paths);
        }
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (driver, _guard) = $make;
                $crate::driver::testsuite::$name(&driver).await;
            }
        )*
    };
}

crate::driver_suite!(memory, (MemoryDriver::new(), ()));
crate::driver_suite!(fs, {
    let dir = tempfile::tempdir().unwrap();
    (FsDriver::new(dir.path()).unwrap(), dir)
});
