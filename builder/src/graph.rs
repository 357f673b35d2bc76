//! The neutral build graph: vertices of [`Op`]s and their inputs, as the solver sees them.
//!
//! Nothing here knows Dockerfiles: [`crate::convert`] is the only place that maps
//! instructions to ops. Every op serialises canonically; that serialisation, the keys
//! of its inputs and the digests of its sources make its cache key.

use serde::{Deserialize, Serialize};

use crate::dockerfile::mount::MountSpec;

/// An index into [`Graph::vertices`].
pub type VertexId = usize;

/// The DAG of a build: vertices refer only to earlier vertices.
#[derive(Debug, Default, Clone)]
pub struct Graph {
    /// The vertices, inputs before the vertices that use them.
    pub vertices: Vec<Vertex>,
    /// Vertex ids by definition (op, inputs, caching), so that one step is one vertex.
    defined: std::collections::HashMap<String, VertexId>,
}

impl Graph {
    /// Adds a vertex and returns its id; a vertex defined as an earlier one (the same op on
    /// the same inputs) is that one, as BuildKit's LLB merges equal ops: a build for several
    /// platforms runs a step that does not depend on the platform once.
    pub fn add(&mut self, v: Vertex) -> VertexId {
        // Base images are merged by the converter (per reference and platform), so that each
        // stage's FROM keeps its own name. The definition is every field of the op, not its
        // cache-key form, which leaves out what does not change the result (a secret's id,
        // a cache mount's sharing, the proxy variables) but changes what the step does.
        let definition = match v.op {
            Op::Image { .. } | Op::Scratch => None,
            _ => Some(format!("{:?}", (&v.op, &v.inputs, v.no_cache))),
        };
        if let Some(id) = definition.as_ref().and_then(|d| self.defined.get(d)) {
            return *id;
        }
        self.vertices.push(v);
        let id = self.vertices.len() - 1;
        if let Some(d) = definition {
            self.defined.insert(d, id);
        }
        id
    }

    /// The vertices of `target`'s own filesystem chain, base first: each vertex's first
    /// input down to the base (the final image's steps, what a mode=min cache export carries).
    pub fn chain(&self, target: VertexId) -> Vec<VertexId> {
        let mut out = vec![];
        let mut at = Some(target);
        while let Some(id) = at {
            out.push(id);
            at = self.vertices[id].inputs.first().copied();
        }
        out.reverse();
        out
    }

    /// The vertices of every target's chain (see [`Graph::chain`]), each once, in graph order.
    pub fn chains(&self, targets: &[VertexId]) -> Vec<VertexId> {
        let all: std::collections::BTreeSet<VertexId> = targets.iter().flat_map(|t| self.chain(*t)).collect();
        all.into_iter().collect()
    }
}

/// One step of the build.
#[derive(Debug, Clone)]
pub struct Vertex {
    /// What it does.
    pub op: Op,
    /// The vertices whose results it uses; `inputs[0]` is the filesystem it changes.
    pub inputs: Vec<VertexId>,
    /// How the progress names it (`[build 2/5] RUN make`).
    pub name: String,
    /// Byte offset of its instruction in the Dockerfile (for errors).
    pub at: usize,
    /// Never taken from the cache (`--no-cache`, `--no-cache-filter`).
    pub no_cache: bool,
}

/// One layer of a result: what the image manifest and config need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// The blob's digest.
    pub digest: oci::Digest,
    /// The uncompressed tar's digest.
    pub diff_id: oci::Digest,
    /// The blob's size.
    pub size: u64,
    /// The blob's media type.
    pub media_type: String,
}

/// What a vertex does.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// The empty filesystem (`FROM scratch`).
    Scratch,
    /// An image's layers (`FROM image`), already in the local store.
    Image {
        /// The manifest digest: the whole identity of the source.
        manifest: oci::Digest,
        /// Its layers.
        #[serde(skip)]
        layers: Vec<Layer>,
    },
    /// A process run on `inputs[0]` (RUN).
    Exec(ExecOp),
    /// Files copied onto `inputs[0]` (COPY, ADD, WORKDIR's mkdir).
    Copy(CopyOp),
}

/// RUN: a process and its mounts.
#[derive(Debug, Clone, Serialize)]
pub struct ExecOp {
    /// The program and arguments.
    pub args: Vec<String>,
    /// `KEY=value` environment.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// User, as written.
    pub user: Option<String>,
    /// The platform the step runs for (`linux/arm64`): the same command gives other bytes
    /// under another emulator, so it is part of the key.
    pub platform: String,
    /// Host network (docker build's default) or none.
    pub host_network: bool,
    /// `--add-host` lines for /etc/hosts (`HOST:IP`, checked; `host-gateway` is the host's
    /// loopback, as RUN steps share the host's network or have none). Not in the key, as
    /// BuildKit keys them: another address for a name reuses the cache.
    #[serde(skip)]
    pub extra_hosts: Vec<String>,
    /// `RUN --security=insecure`: every capability, no seccomp filter. In the cache key only
    /// when set, so the keys of sandboxed steps stay as they were.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// `--mount`s; bind and cache mounts with `from=` name the input that provides them.
    pub mounts: Vec<ExecMount>,
    /// A heredoc run as a file through its `#!` line, mounted read-only in
    /// `/dev/pipes`: its content is part of the key. Absent from the key when None, so
    /// the keys of other steps stay as they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<crate::dockerfile::RunScript>,
    /// `KEY=value` of the proxy build args (`HTTP_PROXY`, ...) given with `--build-arg` and not
    /// declared by ARG: the process gets them, the cache key does not (as BuildKit does).
    #[serde(skip)]
    pub proxy_env: Vec<String>,
}

impl ExecOp {
    /// The process's whole environment: `env`, then the proxies.
    pub fn process_env(&self) -> Vec<String> {
        self.env.iter().chain(&self.proxy_env).cloned().collect()
    }
}

/// One `RUN --mount`, resolved.
#[derive(Debug, Clone, Serialize)]
pub struct ExecMount {
    /// The parsed mount.
    #[serde(serialize_with = "mount_key")]
    pub spec: MountSpec,
    /// The index in the vertex's inputs of the stage or image it comes from, if any.
    pub input: Option<usize>,
}

/// What of a mount changes the result: secrets and caches do not enter the key.
fn mount_key<S: serde::Serializer>(m: &MountSpec, s: S) -> Result<S::Ok, S::Error> {
    use crate::dockerfile::mount::MountType;
    let kind = format!("{:?}", m.kind);
    let key = match m.kind {
        MountType::Bind => format!("{kind} {} {:?} {:?} {}", m.target, m.source, m.from, m.read_only),
        MountType::Tmpfs => format!("{kind} {}", m.target),
        // Cache content, secret values and the ssh agent are outside the key by design.
        MountType::Cache | MountType::Secret | MountType::Ssh => format!("{kind} {} {:?}", m.target, m.env),
    };
    s.serialize_str(&key)
}

/// COPY, ADD and WORKDIR's mkdir: files onto a filesystem.
#[derive(Debug, Clone, Serialize)]
pub struct CopyOp {
    /// Where the sources come from.
    pub from: CopyFrom,
    /// What to copy.
    pub sources: Vec<CopySrc>,
    /// The destination (absolute).
    pub dest: String,
    /// The destination is a directory (ends in `/`, or several sources).
    pub dest_is_dir: bool,
    /// `--chown` as written (resolved in the destination's /etc/passwd). For WORKDIR's mkdir
    /// (no sources), the stage's USER at that point: the owner of the directories it creates.
    pub chown: Option<String>,
    /// `--chmod`, octal or symbolic, applied to each copied entry's own mode.
    pub chmod: Option<crate::chmod::Chmod>,
    /// `--link`: the layer does not depend on the destination filesystem.
    pub link: bool,
    /// `--parents`: keep the source's parent directories.
    pub parents: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// ADD: unpack local tar archives.
    pub unpack_archives: bool,
}

/// Where COPY reads from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyFrom {
    /// The build context.
    Context,
    /// The filesystem of `inputs[1]` (a stage or image).
    Input,
    /// The local directory of the named build context (`--build-context NAME=DIR`).
    Named(String),
    /// Nothing: heredocs, URLs or a mkdir.
    Nothing,
}

/// One source of a copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopySrc {
    /// A path or glob in the source.
    Path(String),
    /// A file with this name and content.
    Inline {
        /// File name.
        name: String,
        /// Content.
        content: String,
    },
    /// A file downloaded from a URL; `checksum` pins its content.
    Url {
        /// The URL.
        url: String,
        /// `--checksum=sha256:...`.
        checksum: Option<oci::Digest>,
    },
}
