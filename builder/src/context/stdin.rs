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

/// Reads `r`: a tar stream (`ustar` at byte 257, after gunzip when it is gzip) is unpacked
/// into a new directory as it streams; anything else is the Dockerfile.
pub fn read(r: impl Read) -> Result<Stdin> {
    let (head, rest) = peek(r).map_err(Error::io("read stdin"))?;
    let (head, rest): (Vec<u8>, Box<dyn Read>) = if head.starts_with(&[0x1f, 0x8b]) {
        let unzipped = flate2::read::MultiGzDecoder::new(std::io::Cursor::new(head).chain(rest));
        let (head, rest) = peek(unzipped).map_err(Error::io("decompress stdin"))?;
        (head, Box::new(rest))
    } else {
        (head, Box::new(rest))
    };
    let stream = std::io::Cursor::new(head.clone()).chain(rest);
    if head.get(257..262) != Some(b"ustar".as_slice()) {
        let mut text = String::new();
        std::io::BufReader::new(stream)
            .read_to_string(&mut text)
            .map_err(Error::io("read the Dockerfile from stdin"))?;
        return Ok(Stdin::Dockerfile(text));
    }
    let dir = tempfile::Builder::new()
        .prefix("berth-context-")
        .tempdir()
        .map_err(Error::io("make a directory for the context"))?;
    let mut archive = tar::Archive::new(stream);
    archive.set_preserve_permissions(true);
    // The tar crate refuses entries that would land outside the directory.
    archive.unpack(dir.path()).map_err(Error::io("unpack the build context from stdin"))?;
    Ok(Stdin::Context(dir))
}

/// The first 512 bytes of `r` (fewer at its end), and `r` after them.
fn peek<R: Read>(mut r: R) -> std::io::Result<(Vec<u8>, R)> {
    let mut head = Vec::with_capacity(512);
    (&mut r).take(512).read_to_end(&mut head)?;
    Ok((head, r))
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
            let Stdin::Context(dir) = read(&bytes[..]).unwrap() else { panic!("not a context") };
            assert_eq!(std::fs::read_to_string(dir.path().join("src/a.txt")).unwrap(), "a\n");
        }
        let Stdin::Dockerfile(text) = read(&b"FROM busybox\nRUN true\n"[..]).unwrap() else { panic!() };
        assert_eq!(text, "FROM busybox\nRUN true\n");
        let Stdin::Dockerfile(empty) = read(&b""[..]).unwrap() else { panic!() };
        assert_eq!(empty, "");
    }
}
