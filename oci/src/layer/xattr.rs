//! Extended attributes in tar streams, as docker and GNU tar write them: a PAX extended header
//! before the entry, with a `SCHILY.xattr.NAME=VALUE` record per attribute. A file's
//! capabilities (`security.capability`, `setcap`) live there, and a program without them
//! fails where it worked in the image.

use std::io::{self, Write};
use std::path::Path;

/// The PAX records of the extended attributes of the file at `path` (its final symlink
/// followed with `follow`, as for a `/proc/self/fd/N` path), names in order, without
/// overlayfs's and fuse-overlayfs's own; None when it has none (or its file system keeps none).
pub fn records(path: &Path, follow: bool) -> io::Result<Option<Vec<u8>>> {
    let list = |buf: &mut Vec<u8>| {
        if follow {
            rustix::fs::listxattr(path, buf)
        } else {
            rustix::fs::llistxattr(path, buf)
        }
    };
    let get = |name: &str, buf: &mut Vec<u8>| {
        if follow {
            rustix::fs::getxattr(path, name, buf)
        } else {
            rustix::fs::lgetxattr(path, name, buf)
        }
    };
    let mut names = vec![0u8; 4096];
    let n = match list(&mut names) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP | rustix::io::Errno::NODATA) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut names: Vec<&str> = names[..n]
        .split(|b| *b == 0)
        .filter_map(|n| std::str::from_utf8(n).ok())
        .filter(|n| !n.is_empty() && !n.contains(".overlay.") && !n.starts_with("user.fuseoverlayfs."))
        .collect();
    names.sort_unstable();
    let mut out = Vec::new();
    for name in names {
        let mut value = vec![0u8; 65536];
        let len = match get(name, &mut value) {
            Ok(len) => len,
            // Removed since the listing.
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        record(&mut out, &format!("SCHILY.xattr.{name}"), &value[..len]);
    }
    Ok((!out.is_empty()).then_some(out))
}

/// Appends one PAX record, `LEN KEY=VALUE\n`, where LEN counts the whole record, its own
/// digits included.
fn record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Appends a PAX extended header holding `records` to `tar`: they belong to the next entry.
pub fn append<W: Write>(tar: &mut tar::Builder<W>, records: &[u8]) -> io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_path("PaxHeaders/xattrs")?;
    h.set_mode(0o644);
    h.set_size(records.len() as u64);
    h.set_cksum();
    tar.append(&h, records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_counts_its_own_length() {
        let mut out = Vec::new();
        record(&mut out, "SCHILY.xattr.user.a", b"v");
        assert_eq!(out, b"25 SCHILY.xattr.user.a=v\n");
        assert_eq!(out.len(), 25);
        let mut out = Vec::new();
        // 98 bytes besides the length: two digits would make 100, which takes three.
        record(&mut out, "k", &[b'x'; 94]);
        assert_eq!(&out[..4], b"101 ");
        assert_eq!(out.len(), 101);
    }

    #[test]
    fn a_files_attributes_go_through_an_archive_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        if rustix::fs::setxattr(&f, "user.berth", b"\x00bin\xff", rustix::fs::XattrFlags::empty()).is_err() {
            eprintln!("skipping: no user xattrs on {}", dir.path().display());
            return;
        }
        let recs = records(&f, false).unwrap().unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        append(&mut tar, &recs).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_cksum();
        tar.append_data(&mut h, "f", &b"x"[..]).unwrap();
        let bytes = tar.into_inner().unwrap();
        let mut a = tar::Archive::new(&bytes[..]);
        let mut e = a.entries().unwrap().next().unwrap().unwrap();
        let exts: Vec<(String, Vec<u8>)> = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|x| x.unwrap())
            .map(|x| (x.key().unwrap().to_owned(), x.value_bytes().to_vec()))
            .collect();
        assert_eq!(exts, vec![("SCHILY.xattr.user.berth".to_owned(), b"\x00bin\xff".to_vec())]);
    }
}
