//! Foreign platforms: whether the kernel runs another architecture's programs through a
//! binfmt_misc handler (QEMU user-mode emulation, as Debian's `qemu-user-static` registers
//! it), which RUN steps for another platform and `berth run` of a foreign image need.
//!
//! The handler must carry the `F` flag: the kernel then opens the emulator when the handler
//! is registered, so it runs inside any container without being in the image.

use std::path::{Path, PathBuf};

use oci::Platform;

/// Where binfmt_misc is mounted unless `BERTH_BINFMT_MISC` names another directory.
pub const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// What to do when no handler runs a platform: one line, as the error ends.
const FIX: &str = "apt-get install qemu-user-static binfmt-support (they register QEMU with the F flag)";

/// The binfmt_misc directory berth reads: `BERTH_BINFMT_MISC`, else [`BINFMT_MISC`].
pub fn binfmt_dir() -> PathBuf {
    std::env::var_os("BERTH_BINFMT_MISC").map_or_else(|| PathBuf::from(BINFMT_MISC), PathBuf::from)
}

/// Ok when programs of `platform` run here: natively, or through a registered handler with
/// the `F` flag. Otherwise one line saying what is missing and how to fix it.
pub fn check(platform: &Platform, binfmt: &Path) -> Result<(), String> {
    if platform.is_host() {
        return Ok(());
    }
    let Some(elf) = elf_header(platform) else {
        return Err(format!("berth cannot run programs for {platform}: it knows no ELF machine for that platform"));
    };
    let entries = match std::fs::read_dir(binfmt) {
        Ok(e) => e,
        Err(_) => {
            return Err(format!(
                "no emulator for {platform}: binfmt_misc is not mounted at {} \
                 (mount -t binfmt_misc binfmt_misc {0}, then {FIX})",
                binfmt.display()
            ))
        }
    };
    let mut without_f = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "register" || name == "status" {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
        let Some(h) = Handler::parse(&text) else { continue };
        if h.enabled && h.matches(&elf) {
            if h.flags.contains('F') {
                return Ok(());
            }
            without_f = Some(name);
        }
    }
    Err(match without_f {
        Some(name) => format!(
            "no usable emulator for {platform}: binfmt_misc handler {name} lacks the F flag, so the emulator \
             is not found inside a container (re-register it with F, or {FIX})"
        ),
        None => format!("no emulator for {platform}: {FIX}"),
    })
}

/// One binfmt_misc entry, as `/proc/sys/fs/binfmt_misc/<name>` shows it.
#[derive(Debug, PartialEq, Eq)]
struct Handler {
    enabled: bool,
    flags: String,
    offset: usize,
    magic: Vec<u8>,
    mask: Vec<u8>,
}

impl Handler {
    /// Parses an entry; `None` for extension (`E`) entries and anything unreadable.
    fn parse(text: &str) -> Option<Handler> {
        let mut h = Handler { enabled: false, flags: String::new(), offset: 0, magic: vec![], mask: vec![] };
        for line in text.lines() {
            let (key, value) = line.split_once([' ', ':']).unwrap_or((line, ""));
            let value = value.trim_start_matches(':').trim();
            match key {
                "enabled" => h.enabled = true,
                "flags" => h.flags = value.to_owned(),
                "offset" => h.offset = value.parse().ok()?,
                "magic" => h.magic = hex::decode(value).ok()?,
                "mask" => h.mask = hex::decode(value).ok()?,
                _ => {}
            }
        }
        if h.magic.is_empty() {
            return None;
        }
        if h.mask.is_empty() {
            h.mask = vec![0xff; h.magic.len()];
        }
        Some(h)
    }

    /// Whether the kernel would hand a program starting with `header` to this handler.
    fn matches(&self, header: &[u8]) -> bool {
        let Some(window) = header.get(self.offset..self.offset + self.magic.len()) else { return false };
        window.iter().zip(&self.magic).zip(&self.mask).all(|((b, m), k)| b & k == m & k)
    }
}

/// The first 20 bytes of an executable ELF file for `platform`: identification, type and
/// machine, what binfmt_misc handlers for emulators match on.
fn elf_header(platform: &Platform) -> Option<[u8; 20]> {
    // (64-bit, little-endian, e_machine)
    let (wide, little, machine): (bool, bool, u16) = match platform.architecture.as_str() {
        "amd64" => (true, true, 62),
        "386" => (false, true, 3),
        "arm64" => (true, true, 183),
        "arm" => (false, true, 40),
        "ppc64le" => (true, true, 21),
        "ppc64" => (true, false, 21),
        "s390x" => (true, false, 22),
        "riscv64" => (true, true, 243),
        "mips64le" => (true, true, 8),
        "mipsle" => (false, true, 8),
        "loong64" => (true, true, 258),
        _ => return None,
    };
    let mut h = [0u8; 20];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = if wide { 2 } else { 1 };
    h[5] = if little { 1 } else { 2 };
    h[6] = 1;
    let (kind, machine) =
        if little { (2u16.to_le_bytes(), machine.to_le_bytes()) } else { (2u16.to_be_bytes(), machine.to_be_bytes()) };
    h[16..18].copy_from_slice(&kind);
    h[18..20].copy_from_slice(&machine);
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian bookworm's qemu-aarch64 entry, as the kernel shows it.
    const AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\noffset 0\n\
        magic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";

    fn dir_with(entries: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in entries {
            std::fs::write(d.path().join(name), text).unwrap();
        }
        std::fs::write(d.path().join("status"), "enabled\n").unwrap();
        d
    }

    #[test]
    fn a_registered_f_handler_runs_its_platform_and_no_other() {
        let d = dir_with(&[("qemu-aarch64", AARCH64)]);
        let arm64: Platform = "linux/arm64".parse().unwrap();
        if !arm64.is_host() {
            assert_eq!(check(&arm64, d.path()), Ok(()));
        }
        let s390x: Platform = "linux/s390x".parse().unwrap();
        let err = check(&s390x, d.path()).unwrap_err();
        assert!(err.contains("no emulator for linux/s390x") && err.contains("qemu-user-static"), "{err}");
        assert_eq!(check(&Platform::host(), Path::new("/nonexistent")), Ok(()), "the host needs none");
    }

    #[test]
    fn a_handler_without_f_or_disabled_does_not_count() {
        let arm: Platform = "linux/arm/v7".parse().unwrap();
        let armhf = "enabled\ninterpreter /usr/libexec/qemu-binfmt/arm-binfmt-P\nflags: POC\noffset 0\n\
            magic 7f454c4601010100000000000000000002002800\nmask ffffffffffffff00fffffffffffffffffeffffff\n";
        let err = check(&arm, dir_with(&[("qemu-arm", armhf)]).path()).unwrap_err();
        assert!(err.contains("lacks the F flag"), "{err}");
        let off = AARCH64.replace("enabled", "disabled");
        let arm64: Platform = "linux/arm64".parse().unwrap();
        if !arm64.is_host() {
            assert!(check(&arm64, dir_with(&[("qemu-aarch64", &off)]).path()).is_err());
        }
        let err = check(&arm64, Path::new("/nonexistent/binfmt")).unwrap_err();
        assert!(arm64.is_host() || err.contains("not mounted"), "{err}");
    }
}
