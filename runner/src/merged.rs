//! Reads a file of a layered root filesystem without mounting it, as overlayfs shows it:
//! the top layer that has a name wins, whiteouts and opaque directories hide what is below
//! them, and symbolic links are followed through the merged tree (an absolute target, or
//! `..` past the top, stays inside the root). The user and HOME of a process come from the
//! image's /etc/passwd this way, so they are the ones the process itself will read.

use std::collections::VecDeque;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Symbolic links followed at most, as the kernel's limit.
const MAX_LINKS: usize = 40;

/// The contents of `path` (relative to the root) in the merged view of `layers` (top first),
/// at most `cap` bytes; None when it is missing, hidden, not a regular file or unreadable.
pub(crate) fn read(layers: &[PathBuf], path: &str, cap: u64) -> Option<String> {
    let file = resolve(layers, path)?;
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(file).ok()?;
    let mut s = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(f, cap), &mut s).ok()?;
    Some(s)
}

/// The host path of the regular file `path` names in the merged view.
fn resolve(layers: &[PathBuf], path: &str) -> Option<PathBuf> {
    let mut todo: VecDeque<String> = components(path).collect();
    let mut at: Vec<String> = Vec::new();
    // How many layers (from the top) show the entries of each directory of `at`.
    let mut visible: Vec<usize> = vec![layers.len()];
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        match name.as_str() {
            "." => continue,
            ".." => {
                if at.pop().is_some() {
                    visible.pop();
                }
                continue;
            }
            _ => {}
        }
        let dir: PathBuf = at.iter().collect();
        let shown = *visible.last()?;
        let (top, meta) = find(&layers[..shown], &dir, &name)?;
        let rel = dir.join(&name);
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return None;
            }
            let target = std::fs::read_link(layers[top].join(&rel)).ok()?;
            let target = target.to_str()?.to_owned();
            if target.starts_with('/') {
                at.clear();
                visible.truncate(1);
            }
            for c in components(&target).collect::<Vec<_>>().into_iter().rev() {
                todo.push_front(c);
            }
        } else if meta.is_dir() {
            visible.push(narrowed(&layers[..shown], &rel, top));
            at.push(name);
        } else {
            return (todo.is_empty() && meta.is_file()).then(|| layers[top].join(rel));
        }
    }
    None
}

/// The top layer that has `dir/name` and its metadata; None when there is none or a
/// whiteout (a 0/0 device, or fuse-overlayfs's `.wh.NAME`) hides it.
fn find(layers: &[PathBuf], dir: &Path, name: &str) -> Option<(usize, std::fs::Metadata)> {
    for (i, layer) in layers.iter().enumerate() {
        if let Ok(meta) = std::fs::symlink_metadata(layer.join(dir).join(name)) {
            let whiteout = meta.file_type().is_char_device() && meta.rdev() == 0;
            return (!whiteout).then_some((i, meta));
        }
        if std::fs::symlink_metadata(layer.join(dir).join(format!(".wh.{name}"))).is_ok() {
            return None;
        }
    }
    None
}

/// How many layers show the entries of the directory `rel`, found first in layer `top`: down
/// to the first that makes it opaque (included) or has something else there (excluded).
fn narrowed(layers: &[PathBuf], rel: &Path, top: usize) -> usize {
    for (j, layer) in layers.iter().enumerate().skip(top) {
        let path = layer.join(rel);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                if opaque(&path) {
                    return j + 1;
                }
            }
            Ok(_) => return j,
            Err(_) => {}
        }
    }
    layers.len()
}

/// Whether a layer's directory hides the layers below it.
fn opaque(dir: &Path) -> bool {
    let marked = |name: &str| {
        let mut buf = [0u8; 4];
        rustix::fs::lgetxattr(dir, name, &mut buf).is_ok_and(|n| &buf[..n] == b"y")
    };
    marked("trusted.overlay.opaque")
        || marked("user.overlay.opaque")
        || std::fs::symlink_metadata(dir.join(".wh..wh..opq")).is_ok()
}

fn components(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split('/').filter(|c| !c.is_empty()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (path, what) in files {
            let p = d.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            match what.strip_prefix("->") {
                Some(target) => std::os::unix::fs::symlink(target, &p).unwrap(),
                None if *what == "/" => std::fs::create_dir_all(&p).unwrap(),
                None => std::fs::write(&p, what).unwrap(),
            }
        }
        d
    }

    fn paths(layers: &[&tempfile::TempDir]) -> Vec<PathBuf> {
        layers.iter().map(|l| l.path().to_owned()).collect()
    }

    #[test]
    fn a_link_to_a_file_of_another_layer_is_followed_through_the_merged_tree() {
        // The attack: /etc/passwd links to a file of a lower layer, and the layer below that
        // still has an old /etc/passwd that makes `app` root.
        let bottom = layer(&[("etc/passwd", "app:x:0:0::/root:/bin/sh\n")]);
        let middle = layer(&[("usr/share/acct/passwd", "app:x:4242:4242::/home/app:/bin/sh\n")]);
        let top = layer(&[("etc/passwd", "->/usr/share/acct/passwd")]);
        let l = paths(&[&top, &middle, &bottom]);
        assert_eq!(read(&l, "etc/passwd", 1 << 20).unwrap(), "app:x:4242:4242::/home/app:/bin/sh\n");
        // Relative links, `..` past the root and link loops.
        let top = layer(&[("etc/passwd", "->../../../usr/share/acct/passwd"), ("a", "->b"), ("b", "->a")]);
        let l = paths(&[&top, &middle, &bottom]);
        assert_eq!(read(&l, "etc/passwd", 1 << 20).unwrap(), "app:x:4242:4242::/home/app:/bin/sh\n");
        assert_eq!(read(&l, "a", 1 << 20), None);
        // A directory that is a link (`/etc` -> `/usr/etc`) in the top layer.
        let top = layer(&[("etc", "->usr/etc"), ("usr/etc/passwd", "new\n")]);
        assert_eq!(read(&paths(&[&top, &bottom]), "etc/passwd", 1 << 20).unwrap(), "new\n");
    }

    #[test]
    fn whiteouts_and_opaque_directories_hide_the_layers_below() {
        let bottom = layer(&[("etc/passwd", "old\n"), ("etc/group", "old\n")]);
        let top = layer(&[("etc/.wh.passwd", "")]);
        assert_eq!(read(&paths(&[&top, &bottom]), "etc/passwd", 1 << 20), None);
        assert_eq!(read(&paths(&[&top, &bottom]), "etc/group", 1 << 20).unwrap(), "old\n");
        let top = layer(&[("etc/.wh..wh..opq", ""), ("etc/hosts", "h\n")]);
        assert_eq!(read(&paths(&[&top, &bottom]), "etc/group", 1 << 20), None);
        // A file over a lower directory hides that directory's entries.
        let top = layer(&[("etc", "not a directory")]);
        assert_eq!(read(&paths(&[&top, &bottom]), "etc/group", 1 << 20), None);
        // Reads stop at the cap.
        assert_eq!(read(&paths(&[&bottom]), "etc/group", 2).unwrap(), "ol");
    }
}
