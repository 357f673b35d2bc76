//! Platforms (`os/arch[/variant]`): parsed as docker spells them on the command line,
//! normalised as containerd does (so `linux/aarch64` and `linux/arm64/v8` are one platform),
//! and matched against the platforms an index names.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// One platform an image runs on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    /// `linux`, `windows`, ...
    pub os: String,
    /// GOARCH spelling: `amd64`, `arm64`, `arm`, `386`, `ppc64le`, `s390x`, `riscv64`, ...
    pub architecture: String,
    /// `v7` for `arm/v7`; none where the architecture has one default (`arm64` is `v8`).
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary runs on.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform::new("linux", arch, None)
    }

    /// `os`, `architecture` and `variant`, normalised.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let (arch, implied) = match architecture {
            "x86_64" | "x86-64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "armhf" => ("arm", Some("v7")),
            "armel" => ("arm", Some("v6")),
            "i386" | "i686" => ("386", None),
            other => (other, None),
        };
        let variant = match (arch, variant.or(implied)) {
            // arm64 has one variant in practice; docker names it `linux/arm64`.
            ("arm64", Some("v8" | "8")) => None,
            ("arm", None) => Some("v7".to_owned()),
            (_, Some(v)) if v.chars().all(|c| c.is_ascii_digit()) => Some(format!("v{v}")),
            (_, v) => v.map(str::to_owned),
        };
        Platform { os: os.to_ascii_lowercase(), architecture: arch.to_owned(), variant }
    }

    /// The platform as an OCI descriptor's `platform` object.
    pub fn to_json(&self) -> serde_json::Value {
        let mut p = serde_json::json!({ "architecture": self.architecture, "os": self.os });
        if let Some(v) = &self.variant {
            p["variant"] = serde_json::json!(v);
        }
        p
    }

    /// Whether this is the host's platform (which runs without an emulator).
    pub fn is_host(&self) -> bool {
        *self == Platform::host()
    }

    /// The platform of an index entry, if it names one.
    pub fn of(d: &oci_spec::image::Descriptor) -> Option<Platform> {
        let p = d.platform().as_ref()?;
        Some(Platform::new(&p.os().to_string(), &p.architecture().to_string(), p.variant().as_deref()))
    }

    /// The platform an image config records (`os`, `architecture`, `variant`).
    pub fn of_config(config: &oci_spec::image::ImageConfiguration) -> Platform {
        Platform::new(&config.os().to_string(), &config.architecture().to_string(), config.variant().as_deref())
    }

    /// The entry of `index` for this platform.
    pub fn pick<'a>(&self, index: &'a oci_spec::image::ImageIndex) -> Option<&'a oci_spec::image::Descriptor> {
        index.manifests().iter().find(|d| Platform::of(d).as_ref() == Some(self))
    }
}

impl FromStr for Platform {
    type Err = Error;

    /// `os/arch[/variant]`, or a bare `arch` (Linux).
    fn from_str(s: &str) -> Result<Platform> {
        let bad = |why: &str| Error::InvalidSetting {
            name: "platform".into(),
            value: s.to_owned(),
            reason: format!("{why}: expected os/arch[/variant], as linux/arm64 or linux/arm/v7"),
        };
        let parts: Vec<&str> = s.trim().split('/').collect();
        let ok = |p: &&str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if parts.len() > 3 || !parts.iter().all(ok) {
            return Err(bad("not a platform"));
        }
        Ok(match parts[..] {
            [arch] => Platform::new("linux", arch, None),
            [os, arch] => Platform::new(os, arch, None),
            [os, arch, variant] => Platform::new(os, arch, Some(variant)),
            _ => return Err(bad("empty")),
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_normalise_to_one_platform() {
        let p = |s: &str| s.parse::<Platform>().unwrap().to_string();
        assert_eq!(p("linux/arm64/v8"), "linux/arm64");
        assert_eq!(p("linux/aarch64"), "linux/arm64");
        assert_eq!(p("arm64"), "linux/arm64");
        assert_eq!(p("linux/arm"), "linux/arm/v7");
        assert_eq!(p("linux/armhf"), "linux/arm/v7");
        assert_eq!(p("linux/arm/6"), "linux/arm/v6");
        assert_eq!(p("linux/x86_64"), "linux/amd64");
        assert_eq!(p("Linux/riscv64"), "linux/riscv64");
        for bad in ["", "linux/", "a/b/c/d", "linux/arm 64", "../x"] {
            assert!(bad.parse::<Platform>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_host_is_a_platform_like_any_other() {
        let h = Platform::host();
        assert!(h.is_host());
        assert_eq!(h.to_string().parse::<Platform>().unwrap(), h);
    }
}
