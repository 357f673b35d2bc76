//! `berth build -`: what comes on stdin is either a Dockerfile alone (a build without a
//! context) or a tar of the context, plain or gzip, as docker reads it.

use std::io::Read;

use crate::error::{Error, Result};

/// What `berth build -` found on stdin.
pub enum Stdin {
    /// A Dockerfile alone: the build has no context.
    Dockerfile(String),
    /// A tar (plain or gzip) of the context, unpacked here; removed when dropped.
    Context(tempfile::TempDir),
}

/// Reads `r`: a tar stream (plain, or compressed as ADD's archives may be: gzip, zstd, xz,
/// bzip2) is unpacked into a new directory as it streams; anything else is the Dockerfile.
pub fn read(r: impl Read + 'static) -> Result<Stdin> {
    let (head, stream) = crate::ops::archive::peek(Box::new(r), 512).map_err(Error::io("read stdin"))?;
    if !crate::ops::archive::may_be_archive(&head) {
        let mut text = String::new();
        std::io::BufReader::new(stream)
            .read_to_string(&mut text)
            .map_err(Error::io("read the Dockerfile from stdin"))?;
        return Ok(Stdin::Dockerfile(text));
    }
    let Some(mut archive) = crate::ops::archive::tar_of(stream, "stdin")? else {
        return Err(Error::Context {
            path: "stdin".into(),
            reason: "compressed, but not a tar of the build context".into(),
        });
    };
    let dir = tempfile::Builder::new()
        .prefix("berth-context-")
        .tempdir()
        .map_err(Error::io("make a directory for the context"))?;
    archive.set_preserve_permissions(true);
    // The tar crate refuses entries that would land outside the directory.
    archive.unpack(dir.path()).map_err(Error::io("unpack the build context from stdin"))?;
    Ok(Stdin::Context(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, content) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(content.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, content.as_bytes()).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn a_tar_plain_or_gzip_is_the_context_and_anything_else_the_dockerfile() {
        let tar = tar_of(&[("Dockerfile", "FROM scratch\n"), ("src/a.txt", "a\n")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        for bytes in [tar.clone(), gz.finish().unwrap()] {
            let Stdin::Context(dir) = read(std::io::Cursor::new(bytes)).unwrap() else { panic!("not a context") };
            assert_eq!(std::fs::read_to_string(dir.path().join("src/a.txt")).unwrap(), "a\n");
        }
        let Stdin::Dockerfile(text) = read(&b"FROM busybox\nRUN true\n"[..]).unwrap() else { panic!() };
        assert_eq!(text, "FROM busybox\nRUN true\n");
        let Stdin::Dockerfile(empty) = read(&b""[..]).unwrap() else { panic!() };
        assert_eq!(empty, "");
        let mut text_gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut text_gz, b"FROM busybox\n").unwrap();
        let Err(e) = read(std::io::Cursor::new(text_gz.finish().unwrap())) else { panic!("a gzip Dockerfile") };
        assert!(e.to_string().contains("not a tar of the build context"), "{e}");
    }
}
