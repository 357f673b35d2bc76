//! `--mount=type=tmpfs`: a tmpfs the sandbox mounts; nothing on the host to undo.

use crate::dockerfile::mount::MountSpec;

/// A tmpfs mount; it lives in the sandbox's mount namespace and goes with it.
pub(super) struct TmpfsMount {
    /// `TARGET[:OPTIONS]`, as the sandbox takes it.
    pub spec: String,
}

impl TmpfsMount {
    /// The sandbox's tmpfs option for `spec`.
    pub(super) fn prepare(spec: &MountSpec) -> TmpfsMount {
        let spec = match spec.size {
            Some(size) => format!("{}:mode=1777,size={size}", spec.target),
            None => spec.target.clone(),
        };
        TmpfsMount { spec }
    }
}
