//! `--mount=type=ssh`: a `--ssh` agent socket bound into the step, with SSH_AUTH_SOCK.

use runner::sandbox::Volume;

use super::Step;
use crate::dockerfile::mount::MountSpec;
use crate::error::{Error, Result};

/// An agent socket bound read-only at the mount's target.
pub(super) struct SshMount {
    /// The socket's bind.
    pub volume: Volume,
    /// `SSH_AUTH_SOCK=TARGET`.
    pub env: String,
}

impl SshMount {
    /// The agent `--ssh` gave for the mount's id; None when it is missing and not required.
    pub(super) fn prepare(step: &Step<'_, '_>, spec: &MountSpec) -> Result<Option<SshMount>> {
        let sid = spec.id.clone().unwrap_or_default();
        match step.worker.ssh.get(&sid) {
            Some(sock) => Ok(Some(SshMount {
                volume: Volume {
                    host: sock.clone(),
                    container: spec.target.clone(),
                    read_only: true,
                    recursive: Default::default(),
                },
                env: format!("SSH_AUTH_SOCK={}", spec.target),
            })),
            None if spec.required => {
                Err(Error::NotFound { what: format!("ssh agent {sid:?} (give it with --ssh {sid}=SOCKET)") })
            }
            None => Ok(None),
        }
    }
}
