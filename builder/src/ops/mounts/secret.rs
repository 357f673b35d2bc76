//! `--mount=type=secret`: a `--secret` bound as a file, or given as an environment
//! variable (`env=`), for this step only.

use runner::sandbox::Volume;

use super::Step;
use crate::dockerfile::mount::MountSpec;
use crate::error::{Error, Result};
use crate::ops::{RemoveOnDrop, Secret};

/// A secret mount; its temporary file is removed on drop.
pub(super) struct SecretMount {
    /// The secret file's bind, unless it is given as env.
    pub volume: Option<Volume>,
    /// `VAR=value` for `env=`.
    pub env: Option<String>,
    /// The temporary file holding an `env=` secret's value.
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
        let mut file = None;
        let value_file = match secret {
            Secret::File(p) => p.clone(),
            Secret::Env(var) => {
                let p = step.work.join(format!("secret-{i}"));
                let value = std::env::var(var)
                    .map_err(|_| Error::NotFound { what: format!("environment variable {var} for secret {sid:?}") })?;
                std::fs::write(&p, value).map_err(Error::io(format!("write {}", p.display())))?;
                file = Some(RemoveOnDrop(p.clone()));
                p
            }
        };
        let mount = match &spec.env {
            Some(var) => {
                let value = std::fs::read_to_string(&value_file).map_err(Error::io(format!("read secret {sid:?}")))?;
                SecretMount { volume: None, env: Some(format!("{var}={value}")), _file: file }
            }
            None => SecretMount {
                volume: Some(Volume { host: value_file, container: spec.target.clone(), read_only: true }),
                env: None,
                _file: file,
            },
        };
        Ok(Some(mount))
    }
}
