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

/// Whether the layers below (topmost first) have `rel`: the first that has anything there
/// decides, and an overlay whiteout (a 0/0 character device) there means it is gone.
fn below(lowers: &[PathBuf], rel: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    for lower in lowers {
        if let Ok(m) = std::fs::symlink_metadata(lower.join(rel)) {
            return !(m.file_type().is_char_device() && m.rdev() == 0);
        }
    }
    false
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
}
