//! ADD of a local archive: its entries re-emitted under the destination, refused when they
//! would leave it, and counted so that an archive bomb cannot fill the disk.
//!
//! Entries are written as fresh headers, so long names (GNU or PAX), PAX sizes and GNU
//! sparse files come out as plain entries the runner's unpacker takes: a sparse file is
//! expanded (its holes become zeros, as `docker build` writes them). As docker does, an
//! entry path, a hardlink target or a relative symlink target that climbs out of the
//! destination with `..` is refused, naming the entry; absolute symlink targets are kept
//! as written (they point into the image). berth also refuses an entry written through a
//! symlink of the same archive whose target leaves the destination (docker follows it).
//!
//! The expanded size of all archives of one ADD (file contents, and 512 bytes for each
//! entry's header) is capped by `BERTH_ADD_MAX_EXPANDED` (bytes, or with a `K`, `M`, `G`, `T`
//! suffix, binary: `64G`, `512MiB`; default 64 GiB).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

use oci::layer::Compression;

use crate::error::{Error, Result};

/// The default cap on what the archives of one ADD expand to.
pub const DEFAULT_MAX_EXPANDED: u64 = 64 << 30;

/// How many bytes the archives of one ADD may still expand to.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// The cap, in bytes.
    pub cap: u64,
    /// What was written so far.
    pub used: u64,
}

impl Budget {
    /// The cap `BERTH_ADD_MAX_EXPANDED` sets, or [`DEFAULT_MAX_EXPANDED`].
    pub fn from_env() -> Result<Budget> {
        let cap = match std::env::var("BERTH_ADD_MAX_EXPANDED") {
            Ok(v) => parse_size(&v).ok_or_else(|| Error::Image {
                what: "the ADD archive size cap".into(),
                source: Box::new(oci::Error::InvalidSetting {
                    name: "BERTH_ADD_MAX_EXPANDED".into(),
                    value: v.clone(),
                    reason: "give a size in bytes, or with K, M, G or T (binary), like 64G".into(),
                }),
            })?,
            Err(_) => DEFAULT_MAX_EXPANDED,
        };
        Ok(Budget { cap, used: 0 })
    }

    /// Takes `n` more bytes for `entry` of `archive`, or refuses.
    fn take(&mut self, n: u64, archive: &str, entry: &str) -> Result<()> {
        self.used = self.used.saturating_add(n);
        if self.used > self.cap {
            return Err(Error::Context {
                path: archive.to_owned(),
                reason: format!(
                    "the archive expands to more than {} bytes (at entry {entry:?}); BERTH_ADD_MAX_EXPANDED raises the cap",
                    self.cap
                ),
            });
        }
        Ok(())
    }
}

/// `1024`, `64G`, `64GiB`, `512M`, `512MB`, `10k`: binary multiples, case-insensitive.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let shift = match s[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

/// How a local file ADD unpacks is compressed, told by its first bytes as BuildKit tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// No known compression: a plain tar, or a file copied as it is.
    Plain,
    /// gzip: 1F 8B.
    Gzip,
    /// zstd: 28 B5 2F FD.
    Zstd,
    /// xz: FD 37 7A 58 5A 00.
    Xz,
    /// bzip2: "BZh".
    Bzip2,
}

impl Format {
    /// The format whose magic bytes `head` starts with.
    fn detect(head: &[u8]) -> Format {
        match head {
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Format::Xz,
            [b'B', b'Z', b'h', ..] => Format::Bzip2,
            _ => match Compression::detect(head) {
                Compression::None => Format::Plain,
                Compression::Gzip => Format::Gzip,
                Compression::Zstd => Format::Zstd,
            },
        }
    }
}

/// The most memory an xz archive's decoder may ask for (its dictionary): `xz -9` needs 65 MiB,
/// so a header asking for gigabytes is a memory bomb, refused before the allocation.
const XZ_MEMORY_LIMIT_KIB: u32 = 256 << 10;

/// A local file ADD unpacks: a tar, plain or compressed (gzip, bzip2, xz, zstd); None for
/// other files. The file is opened once; the bytes read to recognise it are put back in front.
pub fn open(path: &Path) -> Result<Option<tar::Archive<Box<dyn Read>>>> {
    let file = std::fs::File::open(path).map_err(Error::io(format!("open {}", path.display())))?;
    tar_of(Box::new(file), &path.display().to_string())
}

/// The stream `r` (named `name` in errors) as a tar, decompressed by what its first bytes
/// say; None when it holds no tar (then what was read of it is gone). A compressed stream
/// that is not a tar inside is None too; an xz whose dictionary is over the limit is refused
/// rather than allocated.
pub(crate) fn tar_of(r: Box<dyn Read>, name: &str) -> Result<Option<tar::Archive<Box<dyn Read>>>> {
    let read_err = || Error::io(format!("read {name}"));
    let (head, file) = peek(r, 512).map_err(read_err())?;
    let decoded: Box<dyn Read> = match Format::detect(&head) {
        Format::Plain => file,
        Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Format::Zstd => Box::new(zstd::stream::read::Decoder::new(file).map_err(read_err())?),
        Format::Xz => Box::new(lzma_rust2::XzReader::new_mem_limit(file, true, XZ_MEMORY_LIMIT_KIB)),
        Format::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(file)),
    };
    let (inner, decoded) = match peek(decoded, 512) {
        Ok(peeked) => peeked,
        Err(e) if e.kind() == std::io::ErrorKind::OutOfMemory => {
            return Err(Error::Context {
                path: name.to_owned(),
                reason: format!(
                    "the xz archive needs more than {} MiB to decompress ({e}); refused",
                    XZ_MEMORY_LIMIT_KIB >> 10
                ),
            })
        }
        Err(_) => return Ok(None),
    };
    Ok(is_tar(&inner).then(|| tar::Archive::new(decoded)))
}

/// Whether `head`, the first 512 bytes of a stream, starts a tar or a compressed stream
/// (which [`tar_of`] would open): anything else is some other file.
pub(crate) fn may_be_archive(head: &[u8]) -> bool {
    is_tar(head) || Format::detect(head) != Format::Plain
}

/// Whether `head` is a tar header (`ustar` at byte 257).
fn is_tar(head: &[u8]) -> bool {
    head.get(257..262) == Some(b"ustar".as_slice())
}

/// Reads up to `n` bytes of `r` and returns them with a reader that yields them again first.
pub(crate) fn peek(mut r: Box<dyn Read>, n: usize) -> std::io::Result<(Vec<u8>, Box<dyn Read>)> {
    let mut head = Vec::with_capacity(n);
    (&mut r).take(n as u64).read_to_end(&mut head)?;
    Ok((head.clone(), Box::new(std::io::Cursor::new(head).chain(r))))
}

/// Re-emits the entries of `archive` (named `name` in messages) under `dest` into `out`,
/// owned by `owner` when ADD has `--chown` (as BuildKit 0.23 and later do), else as archived.
pub fn unpack(
    mut archive: tar::Archive<Box<dyn Read>>,
    name: &str,
    dest: &str,
    out: &mut tar::Builder<impl Write>,
    budget: &mut Budget,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    let read_err = || Error::io(format!("read the archive {name}"));
    // Symlinks this archive made, by their path below `dest`, with their targets.
    let mut links: HashMap<String, String> = HashMap::new();
    for entry in archive.entries().map_err(read_err())? {
        let mut entry = entry.map_err(read_err())?;
        let raw = entry.path().map_err(read_err())?.to_string_lossy().into_owned();
        let refuse =
            |why: String| Error::Context { path: name.to_owned(), reason: format!("entry {raw:?} {why}; refused") };
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            continue;
        }
        let Some(rel) = crate::context::clean_rel(&raw) else {
            return Err(refuse("climbs out of the destination with '..'".into()));
        };
        if rel.is_empty() {
            // The archive's `./`: the destination keeps its own mode and owner, as BuildKit
            // skips `.` when extracting (`ADD x.tar /` must not change `/`).
            continue;
        }
        through_links(&links, &rel).map_err(|link| {
            refuse(format!(
                "is written through the symlink {link:?} -> {:?}, which leaves the destination",
                links[&link]
            ))
        })?;
        // Every entry costs at least its header: a million empty files is a bomb too.
        let data =
            if kind.is_file() || kind.is_gnu_sparse() || kind == tar::EntryType::Continuous { entry.size() } else { 0 };
        budget.take(512 + data, name, &raw)?;
        let h = entry.header();
        let mut head = tar::Header::new_gnu();
        // Empty owner fields read as 0, as Go's archive/tar (docker's) reads them; no mode, 0644.
        head.set_mode(h.mode().unwrap_or(0o644));
        head.set_uid(owner.map_or(h.uid().unwrap_or(0), |o| u64::from(o.0)));
        head.set_gid(owner.map_or(h.gid().unwrap_or(0), |o| u64::from(o.1)));
        head.set_mtime(h.mtime().unwrap_or(0));
        let target = join(dest, &rel);
        let stream = |e: std::io::Error| Error::io(format!("stream {target}"))(e);
        match kind {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let link = entry.link_name().map_err(read_err())?.unwrap_or_default().to_string_lossy().into_owned();
                head.set_entry_type(kind);
                head.set_size(0);
                let written = link_target(kind == tar::EntryType::Link, &rel, &link, dest).map_err(refuse)?;
                if kind == tar::EntryType::Symlink {
                    links.insert(rel.clone(), link);
                }
                out.append_link(&mut head, &target, &written).map_err(stream)?;
            }
            tar::EntryType::Directory => {
                head.set_entry_type(kind);
                head.set_size(0);
                out.append_data(&mut head, format!("{target}/"), std::io::empty()).map_err(stream)?;
            }
            k if k.is_file() || k.is_gnu_sparse() || k == tar::EntryType::Continuous => {
                // A sparse file's size is what it expands to; the reader fills the holes.
                let size = entry.size();
                head.set_entry_type(tar::EntryType::Regular);
                head.set_size(size);
                out.append_data(&mut head, &target, (&mut entry).take(size)).map_err(stream)?;
            }
            tar::EntryType::Fifo | tar::EntryType::Char | tar::EntryType::Block => {
                // Passed on; the unpacker's device policy decides.
                head.set_entry_type(kind);
                head.set_size(0);
                let h = entry.header();
                head.set_device_major(h.device_major().ok().flatten().unwrap_or(0)).map_err(stream)?;
                head.set_device_minor(h.device_minor().ok().flatten().unwrap_or(0)).map_err(stream)?;
                out.append_data(&mut head, &target, std::io::empty()).map_err(stream)?;
            }
            other => return Err(refuse(format!("has an entry type berth does not unpack ({other:?})"))),
        }
    }
    Ok(())
}

/// What a link entry at `rel` points to in the output: a hardlink's target (an entry of the
/// archive) placed under `dest`, a symlink's as written; Err(why) when it leaves `dest`.
fn link_target(hard: bool, rel: &str, link: &str, dest: &str) -> std::result::Result<String, String> {
    if hard {
        return match crate::context::clean_rel(link).filter(|t| !t.is_empty()) {
            Some(to) => Ok(join(dest, &to)),
            None => Err(format!("is a hardlink to {link:?}, outside the destination")),
        };
    }
    if symlink_leaves(rel, link) {
        return Err(format!("is a symlink to {link:?}, which leaves the destination"));
    }
    Ok(link.to_owned())
}

/// True when a symlink at `rel` (below the destination) pointing to `target` climbs out of
/// the destination: `..` past its top. Absolute targets point into the image, as docker keeps them.
fn symlink_leaves(rel: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return false;
    }
    let parent = rel.rsplit_once('/').map_or("", |(p, _)| p);
    crate::context::clean_rel(&format!("{parent}/{target}")).is_none()
}

/// Err(the symlink) when `rel` passes, below its last component, through a symlink of this
/// archive whose target leaves the destination (absolute, or climbing after resolution).
fn through_links(links: &HashMap<String, String>, rel: &str) -> std::result::Result<(), String> {
    let mut path: Vec<String> = rel.split('/').filter(|c| !c.is_empty()).map(str::to_owned).collect();
    let mut hops = 0;
    let mut i = 0;
    while i + 1 < path.len() {
        let prefix = path[..=i].join("/");
        let Some(target) = links.get(&prefix) else {
            i += 1;
            continue;
        };
        hops += 1;
        let parent = path[..i].join("/");
        let resolved = if target.starts_with('/') || hops > 40 {
            None
        } else {
            crate::context::clean_rel(&format!("{parent}/{target}"))
        };
        let Some(resolved) = resolved else { return Err(prefix) };
        let mut next: Vec<String> = resolved.split('/').filter(|c| !c.is_empty()).map(str::to_owned).collect();
        next.extend(path.drain(i + 1..));
        path = next;
        i = 0;
    }
    Ok(())
}

fn join(dest: &str, rel: &str) -> String {
    let dest = dest.trim_matches('/');
    match (dest.is_empty(), rel.is_empty()) {
        (true, _) => rel.to_owned(),
        (_, true) => dest.to_owned(),
        _ => format!("{dest}/{rel}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive built by `fill`, re-emitted under `dest` with a `cap`; the entries written
    /// (path, type, size, link target), or the error's text.
    fn run(
        fill: impl FnOnce(&mut tar::Builder<Vec<u8>>),
        cap: u64,
    ) -> std::result::Result<Vec<(String, char, u64, String)>, String> {
        run_owned(fill, cap, None).map(|v| v.into_iter().map(|(e, _)| e).collect())
    }

    /// [`run`] with `--chown`; each entry also with its (uid, gid).
    #[allow(clippy::type_complexity)] // a test's table of what came out
    fn run_owned(
        fill: impl FnOnce(&mut tar::Builder<Vec<u8>>),
        cap: u64,
        owner: Option<(u32, u32)>,
    ) -> std::result::Result<Vec<((String, char, u64, String), (u64, u64))>, String> {
        let mut b = tar::Builder::new(Vec::new());
        fill(&mut b);
        let bytes = b.into_inner().unwrap();
        let archive = tar::Archive::new(Box::new(std::io::Cursor::new(bytes)) as Box<dyn Read>);
        let mut out = tar::Builder::new(Vec::new());
        let mut budget = Budget { cap, used: 0 };
        unpack(archive, "a.tar", "app", &mut out, &mut budget, owner).map_err(|e| oci::error::chain(&e))?;
        let bytes = out.into_inner().unwrap();
        let mut back = tar::Archive::new(std::io::Cursor::new(bytes));
        Ok(back
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let link = e.link_name().unwrap().map(|l| l.to_string_lossy().into_owned()).unwrap_or_default();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                let kind = e.header().entry_type().as_byte() as char;
                let ids = (e.header().uid().unwrap(), e.header().gid().unwrap());
                ((e.path().unwrap().to_string_lossy().into_owned(), kind, data.len() as u64, link), ids)
            })
            .collect())
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, data).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        // Written raw, so that the tar crate cannot tidy hostile names away.
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
    }

    #[test]
    fn files_links_and_dirs_land_under_the_destination() {
        let got = run(
            |b| {
                file(b, "bin/tool", b"#!/bin/sh\n");
                link(b, tar::EntryType::Symlink, "bin/t", "tool");
                link(b, tar::EntryType::Symlink, "bin/sh", "/bin/busybox");
                link(b, tar::EntryType::Link, "bin/hard", "bin/tool");
            },
            1 << 20,
        )
        .unwrap();
        assert_eq!(
            got,
            [
                ("app/bin/tool".into(), '0', 10, String::new()),
                ("app/bin/t".into(), '2', 0, "tool".into()),
                ("app/bin/sh".into(), '2', 0, "/bin/busybox".into()),
                ("app/bin/hard".into(), '1', 0, "app/bin/tool".into()),
            ]
        );
    }

    #[test]
    fn escaping_links_and_entries_are_refused_by_name() {
        type Fill = fn(&mut tar::Builder<Vec<u8>>);
        let cases: [(&str, Fill); 4] = [
            ("entry \"up\" is a symlink to \"../../etc\", which leaves the destination", |b| {
                link(b, tar::EntryType::Symlink, "up", "../../etc")
            }),
            ("entry \"sub/h\" is a hardlink to \"../../etc/shadow\", outside the destination", |b| {
                link(b, tar::EntryType::Link, "sub/h", "../../etc/shadow")
            }),
            ("entry \"../evil\" climbs out of the destination with '..'", |b| {
                link(b, tar::EntryType::Symlink, "../evil", "x")
            }),
            ("entry \"etc/passwd\" is written through the symlink \"etc\" -> \"/etc\"", |b| {
                link(b, tar::EntryType::Symlink, "etc", "/etc");
                file(b, "etc/passwd", b"root::0:0::/:/bin/sh\n");
            }),
        ];
        for (want, fill) in cases {
            let e = run(fill, 1 << 20).unwrap_err();
            assert!(e.starts_with("a.tar: ") && e.contains(want) && e.ends_with("; refused"), "{e}");
        }
        // Through an in-destination symlink is fine.
        let ok = run(
            |b| {
                link(b, tar::EntryType::Symlink, "lib", "usr/lib");
                file(b, "lib/x.so", b"elf");
            },
            1 << 20,
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn long_pax_names_survive() {
        let long = format!("{}/{}.txt", "d".repeat(80), "n".repeat(90));
        let got = run(
            |b| {
                // A PAX path record, as GNU tar --format=posix writes names over 100 bytes.
                let rec = format!("path={long}\n");
                let rec = format!("{} {rec}", rec.len() + 4);
                let mut x = tar::Header::new_ustar();
                x.set_entry_type(tar::EntryType::XHeader);
                x.set_size(rec.len() as u64);
                x.set_path("PaxHeaders/x").unwrap();
                x.set_cksum();
                b.append(&x, rec.as_bytes()).unwrap();
                let mut h = tar::Header::new_ustar();
                h.set_path("short").unwrap();
                h.set_size(3);
                h.set_mode(0o600);
                h.set_cksum();
                b.append(&h, &b"pax"[..]).unwrap();
            },
            1 << 20,
        )
        .unwrap();
        assert_eq!(got, [(format!("app/{long}"), '0', 3, String::new())]);
    }

    #[test]
    fn gnu_sparse_files_are_expanded() {
        let got = run(
            |b| {
                // 4 KiB of data at offset 1 MiB of a 1 MiB + 4 KiB file.
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::GNUSparse);
                h.set_path("sparse.img").unwrap();
                h.set_mode(0o644);
                h.set_size(4096);
                let g = h.as_gnu_mut().unwrap();
                g.sparse[0].offset = octal(1 << 20);
                g.sparse[0].numbytes = octal(4096);
                g.realsize = octal((1 << 20) + 4096);
                h.set_cksum();
                b.append(&h, &[7u8; 4096][..]).unwrap();
            },
            4 << 20,
        )
        .unwrap();
        assert_eq!(got, [("app/sparse.img".into(), '0', (1 << 20) + 4096, String::new())]);
    }

    fn octal<const N: usize>(n: u64) -> [u8; N] {
        let s = format!("{n:0w$o}", w = N - 1);
        let mut out = [0u8; N];
        out[..N - 1].copy_from_slice(s.as_bytes());
        out
    }

    #[test]
    fn the_expanded_size_is_capped() {
        let e = run(
            |b| {
                file(b, "a", &[0u8; 600]);
                file(b, "b", &[0u8; 600]);
            },
            2000,
        )
        .unwrap_err();
        assert!(e.contains("expands to more than 2000 bytes (at entry \"b\")"), "{e}");
        assert!(run(|b| file(b, "a", &[0u8; 600]), 2000).is_ok());
        // Empty entries count their headers.
        let e = run(|b| (0..5).for_each(|i| file(b, &format!("e{i}"), b"")), 2048).unwrap_err();
        assert!(e.contains("(at entry \"e4\")"), "{e}");
    }

    #[test]
    fn chown_owns_the_entries_else_the_archive_does() {
        let fill = |b: &mut tar::Builder<Vec<u8>>| {
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            h.set_uid(1234);
            h.set_gid(2345);
            b.append_data(&mut h, "f", &b"x"[..]).unwrap();
            link(b, tar::EntryType::Symlink, "l", "f");
        };
        let ids = |o| run_owned(fill, 1 << 20, o).unwrap().into_iter().map(|(_, ids)| ids).collect::<Vec<_>>();
        assert_eq!(ids(None), [(1234, 2345), (0, 0)]);
        assert_eq!(ids(Some((1000, 1001))), [(1000, 1001), (1000, 1001)]);
    }

    /// The entry names of what [`open`] made of `path`, or None when it copies the file.
    fn names(path: &Path) -> Option<Vec<String>> {
        let mut a = open(path).unwrap()?;
        Some(a.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect())
    }

    #[test]
    fn xz_and_bzip2_tars_open_by_their_magic_bytes_not_their_names() {
        assert_eq!(Format::detect(&[0xfd, b'7', b'z', b'X', b'Z', 0, 1]), Format::Xz);
        assert_eq!(Format::detect(b"BZh91AY&SY"), Format::Bzip2);
        assert_eq!(Format::detect(b"BZ"), Format::Plain);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/f.txt"), "x\n").unwrap();
        for (flag, name) in [("-cJf", "a.tar.xz"), ("-cjf", "a.tar.bz2"), ("-cJf", "named.tgz")] {
            let ok = std::process::Command::new("tar")
                .args(["-C", &dir.path().display().to_string(), flag, name, "src"])
                .current_dir(dir.path())
                .status()
                .unwrap();
            assert!(ok.success());
            assert_eq!(names(&dir.path().join(name)).unwrap(), ["src/", "src/f.txt"], "{name}");
        }
        // Only the extension, or a compressed file that is no tar: copied as they are.
        std::fs::write(dir.path().join("fake.tar.xz"), "not an archive").unwrap();
        std::fs::write(dir.path().join("fake.tar.bz2"), "BZh not an archive").unwrap();
        let xz = std::process::Command::new("xz").args(["-k", "src/f.txt"]).current_dir(dir.path()).status();
        assert!(xz.unwrap().success());
        for name in ["fake.tar.xz", "fake.tar.bz2", "src/f.txt.xz"] {
            assert!(names(&dir.path().join(name)).is_none(), "{name}");
        }
    }

    #[test]
    fn an_xz_asking_for_a_huge_dictionary_is_refused_before_allocating_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        let tar = std::process::Command::new("tar").args(["-cf", "a.tar", "f"]).current_dir(dir.path()).status();
        assert!(tar.unwrap().success());
        let xz = std::process::Command::new("xz").args(["-T1", "a.tar"]).current_dir(dir.path()).status();
        assert!(xz.unwrap().success());
        let path = dir.path().join("a.tar.xz");
        let mut bytes = std::fs::read(&path).unwrap();
        // The block header after the 12-byte stream header: its LZMA2 filter (ID 0x21, one
        // property byte) gets the largest dictionary (4 GiB), and the header a new CRC32.
        let size = (usize::from(bytes[12]) + 1) * 4;
        let header = &mut bytes[12..12 + size];
        let at = header.windows(2).position(|w| w == [0x21, 0x01]).unwrap() + 2;
        header[at] = 40;
        let mut crc = flate2::Crc::new();
        crc.update(&header[..size - 4]);
        header[size - 4..].copy_from_slice(&crc.sum().to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let e = open(&path).map(|_| ()).map_err(|e| oci::error::chain(&e)).unwrap_err();
        assert!(e.contains("the xz archive needs more than 256 MiB to decompress"), "{e}");
    }

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("64G"), Some(64 << 30));
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("10k"), Some(10 << 10));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("5X"), None);
    }
}
