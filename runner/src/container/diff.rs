//! `berth diff`: what a container changed in its filesystem against its image, as docker's
//! `diff` lists it: `A` added, `C` changed, `D` deleted, one path a line.
//!
//! The changes are the container's layer as the snapshotter writes it ([`Snapshotter::diff`]:
//! an overlay's upper directory, no walk of the image), read for its names only; whether a
//! path the layer holds is new or changed is whether the layers below it have that path.
//!
//! [`Snapshotter::diff`]: crate::snapshot::Snapshotter::diff

use std::path::{Path, PathBuf};

use super::{Container, Error, Result};

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Changed: there before, different now (a directory with changes below it, too).
    Changed,
    /// Added: not there before.
    Added,
    /// Deleted.
    Deleted,
}

impl Kind {
    /// docker's letter.
    pub fn letter(self) -> char {
        match self {
            Kind::Changed => 'C',
            Kind::Added => 'A',
            Kind::Deleted => 'D',
        }
    }
}

/// The container's changes, by path (`/etc`, `/etc/motd`), as docker orders them.
pub fn changes(c: &Container) -> Result<Vec<(Kind, String)>> {
    let snapshotter = crate::snapshot::for_root(c.root())?;
    let key = super::snapshot_key(&c.config.id);
    // The layers below the container's own: an overlay's lower directories, else (a copy
    // snapshotter, whose snapshots hold whole trees) what the snapshotter names.
    let lowers = match snapshotter.mounts(&key)?.first() {
        Some(crate::snapshot::Mount::Overlay { lower, .. }) => lower.clone(),
        _ => snapshotter.lowers(&key),
    };
    let (reader, mut writer) = std::io::pipe().map_err(super::io_err("pipe for", &c.dir))?;
    let names = std::thread::scope(|s| {
        let writing = s.spawn(move || snapshotter.diff(&key, &mut writer));
        let read = entry_names(reader);
        let written = writing.join().unwrap_or_else(|_| {
            Err(crate::snapshot::SnapshotError::Io {
                op: "diff",
                path: c.dir.display().to_string(),
                source: std::io::Error::other("the diff thread panicked"),
            })
        });
        written.map_err(Error::from).and(read.map_err(super::io_err("read the changes of", &c.dir)))
    })?;
    let mut out: Vec<(Kind, String)> = names.iter().filter_map(|n| classify(n, &lowers)).collect();
    out.extend(emptied(&names, &lowers));
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out.dedup_by(|a, b| a.1 == b.1);
    Ok(out)
}

/// The names of a tar stream's entries, without their data.
fn entry_names(input: impl std::io::Read) -> std::io::Result<Vec<String>> {
    let mut archive = tar::Archive::new(input);
    let mut names = Vec::new();
    for entry in archive.entries()? {
        let entry = entry?;
        names.push(entry.path()?.to_string_lossy().trim_end_matches('/').to_owned());
    }
    Ok(names)
}

/// One layer entry as a change: an OCI whiteout is a deletion (an opaque directory's marker
/// is its directory changed), any other entry changed when a layer below has its path,
/// else added.
fn classify(name: &str, lowers: &[PathBuf]) -> Option<(Kind, String)> {
    let name = name.trim_start_matches("./");
    if name.is_empty() {
        return None;
    }
    let (dir, base) = name.rsplit_once('/').map_or(("", name), |(d, b)| (d, b));
    let path = |rel: &str| if rel.is_empty() { "/".to_owned() } else { format!("/{rel}") };
    if base == ".wh..wh..opq" {
        return Some((Kind::Changed, path(dir)));
    }
    if let Some(gone) = base.strip_prefix(".wh.") {
        let rel = if dir.is_empty() { gone.to_owned() } else { format!("{dir}/{gone}") };
        return Some((Kind::Deleted, path(&rel)));
    }
    let kind = if below(lowers, Path::new(name)) { Kind::Changed } else { Kind::Added };
    Some((kind, path(name)))
}

/// Whether the layers below (topmost first) have `rel`, as overlayfs would show it: the
/// first layer that has the path decides, a whiteout (a 0/0 character device) there or on
/// the way means it is gone, and an opaque directory on the way hides the layers under it.
fn below(lowers: &[PathBuf], rel: &Path) -> bool {
    let parts: Vec<_> = rel.components().collect();
    'layers: for lower in lowers {
        let (mut at, mut opaque_above) = (lower.clone(), false);
        for (i, part) in parts.iter().enumerate() {
            at.push(part);
            let Ok(m) = std::fs::symlink_metadata(&at) else {
                // Not in this layer: the ones below may have it, unless an opaque
                // directory on the way hides them.
                if opaque_above {
                    return false;
                }
                continue 'layers;
            };
            if is_whiteout(&m) {
                return false;
            }
            if i + 1 == parts.len() {
                return true;
            }
            if !m.is_dir() {
                return false;
            }
            opaque_above |= is_opaque(&at);
        }
    }
    false
}

fn is_whiteout(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Whether the directory `dir` of a layer is opaque (overlayfs's marker): it hides what the
/// layers under it have there.
fn is_opaque(dir: &Path) -> bool {
    let mut buf = [0u8; 1];
    matches!(rustix::fs::lgetxattr(dir, crate::userns::overlay_xattrs().opaque(), &mut buf), Ok(1) if buf[0] == b'y')
}

/// The deletions an opaque directory of the container's layer implies: what the layers below
/// had in it that the layer does not have now (`rm -rf /home; mkdir /home` deletes
/// `/home/berth`), as docker lists them.
fn emptied(names: &[String], lowers: &[PathBuf]) -> Vec<(Kind, String)> {
    let now: std::collections::HashSet<&str> = names.iter().map(|n| n.trim_start_matches("./")).collect();
    let mut out = Vec::new();
    for name in names {
        let Some(dir) = name.trim_start_matches("./").strip_suffix(".wh..wh..opq") else { continue };
        let dir = dir.trim_end_matches('/');
        let mut before = std::collections::BTreeSet::new();
        for lower in lowers {
            let Ok(entries) = std::fs::read_dir(lower.join(dir)) else { continue };
            before.extend(entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()));
        }
        for child in before {
            let rel = if dir.is_empty() { child.clone() } else { format!("{dir}/{child}") };
            if !child.starts_with(".wh.") && !now.contains(rel.as_str()) && below(lowers, Path::new(&rel)) {
                out.push((Kind::Deleted, format!("/{rel}")));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteouts_are_deletions_and_the_layers_below_tell_changed_from_added() {
        let lower = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(lower.path().join("etc")).unwrap();
        std::fs::write(lower.path().join("etc/hosts"), "").unwrap();
        let lowers = vec![lower.path().to_owned()];
        assert_eq!(classify("etc", &lowers), Some((Kind::Changed, "/etc".into())));
        assert_eq!(classify("etc/hosts", &lowers), Some((Kind::Changed, "/etc/hosts".into())));
        assert_eq!(classify("etc/new", &lowers), Some((Kind::Added, "/etc/new".into())));
        assert_eq!(classify("etc/.wh.hosts", &lowers), Some((Kind::Deleted, "/etc/hosts".into())));
        assert_eq!(classify(".wh.tmp", &lowers), Some((Kind::Deleted, "/tmp".into())));
        assert_eq!(classify("var/.wh..wh..opq", &lowers), Some((Kind::Changed, "/var".into())));
        assert_eq!(classify("./", &lowers), None);
    }

    #[test]
    fn a_path_hidden_by_a_higher_layer_is_not_below() {
        let (top, bottom) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::create_dir_all(bottom.path().join("home/berth")).unwrap();
        std::fs::create_dir_all(bottom.path().join("srv/old")).unwrap();
        std::fs::create_dir_all(top.path().join("home")).unwrap();
        // The top layer deleted /srv (a whiteout) and made /home again (opaque).
        rustix::fs::mknodat(
            rustix::fs::CWD,
            top.path().join("srv"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .unwrap();
        let opaque = crate::userns::overlay_xattrs().opaque();
        if rustix::fs::setxattr(top.path().join("home"), opaque, b"y", rustix::fs::XattrFlags::empty()).is_err() {
            eprintln!("skipping: cannot set {opaque} here");
            return;
        }
        let lowers = vec![top.path().to_owned(), bottom.path().to_owned()];
        assert!(below(&lowers, Path::new("home")));
        assert!(!below(&lowers, Path::new("home/berth")), "hidden by the opaque /home above it");
        assert!(!below(&lowers, Path::new("srv/old")), "hidden by the whiteout of /srv");
        assert!(!below(&lowers, Path::new("srv")));
        // The container's layer made /home opaque again: what the image had there is deleted.
        let gone = emptied(&["home/.wh..wh..opq".to_owned()], &[bottom.path().to_owned()]);
        assert_eq!(gone, vec![(Kind::Deleted, "/home/berth".to_owned())]);
    }
}
