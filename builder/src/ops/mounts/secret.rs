//! `--mount=type=secret`: a `--secret` bound as a file, given as an environment variable
//! (`env=`), or both, for this step only.
//!
//! As BuildKit mounts them, the file is mode 0400 owned by root unless the mount says
//! `mode=`, `uid=`, `gid=`. The mounted file is always a private copy, so its mode and owner
//! can be set without touching the user's file: it is created 0600 (then given the mount's
//! mode and owner) in a 0700 directory of the step's work directory, and removed with the
//! guard after the step. The value never enters a layer, the image config or a cache key.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use runner::sandbox::Volume;

use super::Step;
use crate::dockerfile::mount::MountSpec;
use crate::error::{Error, Result};
use crate::ops::{RemoveOnDrop, Secret};

/// The mode of a secret file when the mount gives none (BuildKit's).
const DEFAULT_MODE: u32 = 0o400;

/// A secret mount; its private copy is removed on drop.
pub(super) struct SecretMount {
    /// The secret file's bind, unless it is given as env only.
    pub volume: Option<Volume>,
    /// `VAR=value` for `env=`.
    pub env: Option<String>,
    /// The private copy of the value that is bound into the step.
    _file: Option<RemoveOnDrop>,
}

impl SecretMount {
    /// The secret `--secret` gave for the mount's id; None when it is missing and not required.
    pub(super) fn prepare(step: &Step<'_, '_>, spec: &MountSpec, i: usize) -> Result<Option<SecretMount>> {
        let sid = spec.id.clone().unwrap_or_default();
        let Some(secret) = step.worker.secrets.get(&sid) else {
            if spec.required {
                return Err(Error::NotFound {
                    what: format!("secret {sid:?} (give it with --secret id={sid},src=FILE)"),
                });
            }
            return Ok(None);
        };
        let value = read(secret, &sid)?;
        let env = match &spec.env {
            Some(var) => {
                let text = String::from_utf8(value.clone()).map_err(|_| Error::Context {
                    path: format!("secret {sid:?}"),
                    reason: format!("env={var} needs a UTF-8 value"),
                })?;
                Some(format!("{var}={text}"))
            }
            None => None,
        };
        if spec.target.is_empty() {
            return Ok(Some(SecretMount { volume: None, env, _file: None }));
        }
        let file = private_copy(step.work, i, &value, spec)?;
        let volume = Volume {
            host: file.0.clone(),
            container: spec.target.clone(),
            read_only: true,
            recursive: Default::default(),
        };
        Ok(Some(SecretMount { volume: Some(volume), env, _file: Some(file) }))
    }
}

/// The secret's value: the file's bytes, or the environment variable's.
fn read(secret: &Secret, sid: &str) -> Result<Vec<u8>> {
    match secret {
        Secret::File(p) => std::fs::read(p).map_err(Error::io(format!("read secret {sid:?} from {}", p.display()))),
        Secret::Env(var) => std::env::var_os(var)
            .map(std::os::unix::ffi::OsStringExt::into_vec)
            .ok_or_else(|| Error::NotFound { what: format!("environment variable {var} for secret {sid:?}") }),
    }
}

/// The 0700 directory of a step's secret copies.
fn secrets_dir(work: &Path) -> Result<PathBuf> {
    let dir = work.join("secrets");
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => Ok(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(dir),
        Err(e) => Err(Error::io(format!("create {}", dir.display()))(e)),
    }
}

/// Writes `value` to a new 0600 file of the step's secrets directory, then gives it the
/// mount's mode (0400 by default) and owner (root by default).
fn private_copy(work: &Path, i: usize, value: &[u8], spec: &MountSpec) -> Result<RemoveOnDrop> {
    let path = secrets_dir(work)?.join(format!("secret-{i}"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(Error::io(format!("create {}", path.display())))?;
    let guard = RemoveOnDrop(path.clone());
    f.write_all(value).map_err(Error::io(format!("write {}", path.display())))?;
    let (uid, gid) = (spec.uid.unwrap_or(0), spec.gid.unwrap_or(0));
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(Error::io(format!("chown {}", path.display())))?;
    }
    let mode = spec.mode.unwrap_or(DEFAULT_MODE) & 0o7777;
    f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(Error::io(format!("chmod {}", path.display())))?;
    Ok(guard)
}
