//! Commands over the local image store: images, tag, rmi, inspect, history, prune.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use super::open_store;
use crate::format;
use oci::{ImageRecord, ImageStore, Reference};

/// List images
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth images\n  berth images busybox\n  berth images --format json\n  berth images -q"
)]
pub struct Images {
    /// Show only images of this repository (and tag)
    #[arg(value_name = "REPOSITORY[:TAG]")]
    filter: Option<String>,
    /// Only show image IDs
    #[arg(short, long)]
    quiet: bool,
    /// Don't truncate image IDs
    #[arg(long)]
    no_trunc: bool,
    /// Show manifest digests
    #[arg(long)]
    digests: bool,
    /// Show all images (berth keeps no intermediate images, so the same as without it)
    #[arg(short, long)]
    all: bool,
    /// Filter: dangling=true|false, or reference=PATTERN (a glob on NAME[:TAG], `*` within
    /// a path component)
    #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE")]
    filters: Vec<String>,
    /// Output format: table, json (one object per line, as docker prints it), a Go
    /// template over the same fields (`{{.Repository}}:{{.Tag}}`, `{{json .}}`), or
    /// `table TEMPLATE` for aligned columns under docker's titles
    #[arg(long, default_value = "table")]
    format: String,
}

/// `images --filter`, docker's keys.
enum RowFilter {
    /// `dangling=true|false`: images without a name, or with one.
    Dangling(bool),
    /// `reference=PATTERN`: a glob on the familiar `NAME` or `NAME:TAG`.
    Reference(String),
    /// `label=KEY` or `label=KEY=VALUE`: the image config's labels.
    Label(String, Option<String>),
    /// `before=IMAGE`: images created before that one.
    Before(chrono::DateTime<chrono::Utc>),
    /// `since=IMAGE`: images created after that one.
    Since(chrono::DateTime<chrono::Utc>),
}

impl RowFilter {
    fn parse(store: &ImageStore, s: &str) -> Result<RowFilter> {
        // The creation time of the image a before=/since= names.
        let created = |what: &str| -> Result<chrono::DateTime<chrono::Utc>> {
            let rec = store.resolve(what).with_context(|| format!("filter {s}"))?;
            let row = Row::of(store, &rec)?;
            row.created.with_context(|| format!("filter {s}: {what} has no creation time"))
        };
        match s.split_once('=') {
            Some(("dangling", v)) => match v {
                "true" | "1" => Ok(RowFilter::Dangling(true)),
                "false" | "0" => Ok(RowFilter::Dangling(false)),
                _ => bail!("invalid filter 'dangling={v}': dangling takes true or false"),
            },
            Some(("reference", v)) => Ok(RowFilter::Reference(v.to_owned())),
            Some(("label", v)) => Ok(match v.split_once('=') {
                Some((k, val)) => RowFilter::Label(k.to_owned(), Some(val.to_owned())),
                None => RowFilter::Label(v.to_owned(), None),
            }),
            Some(("before", v)) => Ok(RowFilter::Before(created(v)?)),
            Some(("since", v)) => Ok(RowFilter::Since(created(v)?)),
            _ => bail!("invalid filter '{s}': berth images knows dangling, reference, label, before and since"),
        }
    }

    fn keeps(&self, r: &Row) -> bool {
        let dangling = r.repository == "<none>";
        match self {
            RowFilter::Dangling(want) => dangling == *want,
            RowFilter::Reference(p) => {
                !dangling && (glob(p, &r.repository) || glob(p, &format!("{}:{}", r.repository, r.tag)))
            }
            RowFilter::Label(k, v) => r.labels.get(k).is_some_and(|have| v.as_ref().is_none_or(|want| want == have)),
            RowFilter::Before(t) => r.created.is_some_and(|c| c < *t),
            RowFilter::Since(t) => r.created.is_some_and(|c| c > *t),
        }
    }
}

/// Go's `path.Match` for the patterns users write: `*` is any run of characters but `/`,
/// `?` one character but `/`; everything else matches itself.
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    fn at(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).take_while(|&i| i == 0 || n[i - 1] != '/').any(|i| at(&p[1..], &n[i..])),
            Some('?') => n.first().is_some_and(|c| *c != '/') && at(&p[1..], &n[1..]),
            Some(c) => n.first() == Some(c) && at(&p[1..], &n[1..]),
        }
    }
    at(&p, &n)
}

struct Row {
    repository: String,
    tag: String,
    id: oci::Digest,
    /// The registry digest a digest name pins, else the manifest's own.
    digest: oci::Digest,
    /// Whether the row is a name pinned by digest (`repo@sha256:...`), which docker shows
    /// only in the DIGEST column of the repository's tag row for that image.
    pinned: bool,
    created: Option<chrono::DateTime<chrono::Utc>>,
    size: u64,
    /// The image's platform; an index's, each of its entries'.
    platforms: Vec<String>,
    /// The config's labels (of an index: its host platform's image's, or none).
    labels: std::collections::BTreeMap<String, String>,
}

impl Row {
    /// The row of the image (or index) `rec`: an index is one row, as docker shows a
    /// multi-platform image, whose ID is the index's digest and whose size and age are
    /// those of the platforms' images in the store.
    fn of(store: &ImageStore, rec: &ImageRecord) -> Result<Row> {
        let (repository, tag) = match &rec.name {
            Some(n) => (n.familiar_name(), n.tag().unwrap_or("<none>").to_owned()),
            None => ("<none>".to_owned(), "<none>".to_owned()),
        };
        let read = || format!("read image {}", rec.target.digest);
        let pinned = rec.name.as_ref().and_then(Reference::digest);
        let digest = pinned.unwrap_or(&rec.target.digest).clone();
        let pinned = pinned.is_some();
        if !oci::media::is_index(&rec.target.media_type) {
            let img = store.image(&rec.target).with_context(read)?;
            let platform = oci::Platform::of_config(&img.config);
            // As docker shows it: what the layers take unpacked, not their stored size.
            let size = store.unpacked_size(&img)?;
            let (id, created, platforms) = (img.id.clone(), img.created(), vec![platform.to_string()]);
            let labels = img.config.config().as_ref().and_then(|c| c.labels().clone()).unwrap_or_default();
            let labels = labels.into_iter().collect();
            return Ok(Row { repository, tag, id, digest, pinned, created, size, platforms, labels });
        }
        let children = oci::index::children(store, &rec.target).with_context(read)?;
        let mut size = 0;
        for img in children.iter().filter_map(|c| c.image.as_ref()) {
            size += store.unpacked_size(img)?;
        }
        let created = children.iter().filter_map(|c| c.image.as_ref().and_then(|i| i.created())).max();
        let platforms = children.iter().map(|c| c.entry.platform.to_string()).collect();
        let labels =
            store.image(&rec.target).ok().and_then(|i| i.config.config().as_ref().and_then(|c| c.labels().clone()));
        let labels = labels.unwrap_or_default().into_iter().collect();
        Ok(Row { repository, tag, id: rec.target.digest.clone(), digest, pinned, created, size, platforms, labels })
    }
}

/// The column titles of `images --format 'table ...'`, docker's.
const IMAGE_TITLES: [(&str, &str); 8] = [
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("ID", "IMAGE ID"),
    ("Digest", "DIGEST"),
    ("CreatedAt", "CREATED AT"),
    ("CreatedSince", "CREATED"),
    ("Size", "SIZE"),
    ("Platforms", "PLATFORMS"),
];

impl Images {
    /// Lists the store's images, newest first.
    pub fn run(self, root: &Path) -> Result<()> {
        let store = open_store(root)?;
        let filter = self.filter.as_deref().map(parse_filter).transpose()?;
        let row_filters = self.filters.iter().map(|f| RowFilter::parse(&store, f)).collect::<Result<Vec<_>>>()?;
        let list_format = format::ListFormat::parse(&self.format)?;
        let mut rows = Vec::new();
        for rec in store.list()? {
            if let Some((repo, want_tag)) = &filter {
                let same_repo = rec.name.as_ref().is_some_and(|n| n.repository() == *repo);
                if !same_repo
                    || want_tag.as_ref().is_some_and(|t| Some(t.as_str()) != rec.name.as_ref().and_then(|n| n.tag()))
                {
                    continue;
                }
            }
            // One image that cannot be read must not hide the others, nor stop `rmi` of it.
            match Row::of(&store, &rec) {
                Ok(row) => rows.push(row),
                Err(e) => eprintln!(
                    "WARNING: image {} ({}) cannot be read, `berth rmi` removes it: {e:#}",
                    rec.name.as_ref().map_or_else(|| "<none>".to_owned(), |n| n.familiar()),
                    rec.target.digest
                ),
            }
        }
        let mut rows = fold(rows);
        rows.retain(|r| row_filters.iter().all(|f| f.keeps(r)));
        rows.sort_by(|a, b| {
            b.created.cmp(&a.created).then_with(|| a.repository.cmp(&b.repository)).then_with(|| a.tag.cmp(&b.tag))
        });
        let id = |d: &oci::Digest| {
            if self.no_trunc {
                d.to_string()
            } else {
                d.short().to_owned()
            }
        };
        let mut out = std::io::stdout().lock();
        if self.quiet {
            let mut seen = BTreeSet::new();
            for r in &rows {
                if seen.insert(r.id.clone()) {
                    writeln!(out, "{}", id(&r.id))?;
                }
            }
            return Ok(());
        }
        if !matches!(list_format, format::ListFormat::Default) {
            let objs: Vec<_> = rows
                .iter()
                .map(|r| {
                    json!({
                        "Repository": r.repository,
                        "Tag": r.tag,
                        "ID": id(&r.id),
                        "Digest": r.digest.to_string(),
                        "CreatedAt": r.created.map(format::go_time),
                        "CreatedSince": format::since(r.created),
                        "Size": format::size(r.size),
                        "Platforms": r.platforms,
                    })
                })
                .collect();
            write!(out, "{}", list_format.render(&IMAGE_TITLES, &objs)?)?;
            return Ok(());
        }
        let mut table = vec![];
        let mut header = vec!["REPOSITORY", "TAG"];
        if self.digests {
            header.push("DIGEST");
        }
        header.extend(["IMAGE ID", "CREATED", "SIZE"]);
        table.push(header.into_iter().map(String::from).collect());
        for r in &rows {
            let mut row = vec![r.repository.clone(), r.tag.clone()];
            if self.digests {
                row.push(r.digest.to_string());
            }
            row.extend([id(&r.id), format::since(r.created), format::size(r.size)]);
            table.push(row);
        }
        write!(out, "{}", format::table(&table))?;
        Ok(())
    }
}

/// The rows as docker shows them: a digest name is folded into its repository's tag row
/// for the same image (whose DIGEST it becomes), and shown as `REPO <none>` only without
/// one; an unnamed manifest of an image that has a name (the same image under another
/// manifest) is not a dangling image.
fn fold(rows: Vec<Row>) -> Vec<Row> {
    let (pins, mut rows): (Vec<Row>, Vec<Row>) = rows.into_iter().partition(|r| r.pinned);
    for pin in pins {
        let tagged = rows.iter_mut().filter(|r| r.repository == pin.repository && r.id == pin.id && r.tag != "<none>");
        let mut folded = false;
        for r in tagged {
            r.digest = pin.digest.clone();
            folded = true;
        }
        if !folded {
            rows.push(pin);
        }
    }
    let named: BTreeSet<oci::Digest> = rows.iter().filter(|r| r.repository != "<none>").map(|r| r.id.clone()).collect();
    rows.retain(|r| r.repository != "<none>" || !named.contains(&r.id));
    rows
}

/// `busybox` -> (docker.io/library/busybox, None); `busybox:1` -> (…, Some("1")).
fn parse_filter(s: &str) -> Result<(String, Option<String>)> {
    let r: Reference = s.parse()?;
    let has_tag = s.rsplit('/').next().is_some_and(|last| last.contains(':'));
    Ok((r.repository(), if has_tag { r.tag().map(String::from) } else { None }))
}

/// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth tag busybox:latest localhost:5000/busybox:1.36\n  berth tag 3f57d9401f8d app:ci"
)]
pub struct Tag {
    /// The image to tag: a name or an image ID
    #[arg(value_name = "SOURCE_IMAGE[:TAG]")]
    source: String,
    /// The new name
    #[arg(value_name = "TARGET_IMAGE[:TAG]")]
    target: String,
}

impl Tag {
    /// Points the new name at the source image's manifest.
    pub fn run(self, root: &Path) -> Result<()> {
        let store = open_store(root)?;
        let target: Reference = self.target.parse()?;
        if target.digest().is_some() {
            bail!("refusing to create a tag with a digest reference: {}", self.target);
        }
        let source = store.resolve(&self.source)?;
        store.set_name(&target, &source.target)?;
        Ok(())
    }
}

/// Remove one or more images
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  berth rmi app:ci\n  berth rmi -f 3f57d9401f8d")]
pub struct Rmi {
    /// Images to remove: names or image IDs
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
    /// Remove an image by ID even when several names refer to it
    #[arg(short, long)]
    force: bool,
}

impl Rmi {
    /// Untags names; removing by ID drops every name of that image. Blobs no image
    /// needs any more are deleted.
    pub fn run(self, root: &Path) -> Result<()> {
        let store = open_store(root)?;
        let containers = runner::container::list(root)?;
        if let [one] = self.images.as_slice() {
            return rmi_one(&store, one, self.force, &containers);
        }
        let mut failed = 0;
        for what in &self.images {
            if let Err(e) = rmi_one(&store, what, self.force, &containers) {
                eprintln!("berth: {e:#}");
                failed += 1;
            }
        }
        if failed > 0 {
            bail!("{failed} of {} images could not be removed", self.images.len());
        }
        Ok(())
    }
}

fn rmi_one(store: &ImageStore, what: &str, force: bool, containers: &[runner::container::Container]) -> Result<()> {
    let rec = store.resolve(what)?;
    let all = store.list()?;
    // By name: untag only that name. By name@digest: the names of that repository that
    // point at the digest. By ID: every name, which takes -f when there are several, the
    // names of the image's other manifests too (one image loaded from two archive formats).
    let parsed = what.parse::<Reference>().ok();
    let by_name = parsed.as_ref().is_some_and(|n| n.digest().is_none() && store.get(n).ok().flatten().is_some());
    let pinned = parsed.as_ref().filter(|n| n.digest().is_some());
    // An image's own ID (an index's is its digest), never that of an image inside an index:
    // `rmi -f ID` of an image leaves the manifest lists made of it alone.
    let rec_id = if by_name || pinned.is_some() { None } else { Some(store.own_id(&rec.target)) };
    if let Some(id) = &rec_id {
        let hexish = what.strip_prefix("sha256:").unwrap_or(what);
        if !id.hex().starts_with(hexish) && !rec.target.digest.hex().starts_with(hexish) {
            bail!(
                "no such image: {what} (only the index {} holds it; remove that by its name or ID)",
                rec.name.as_ref().map_or_else(|| rec.target.digest.to_string(), |n| n.familiar())
            );
        }
    }
    let same: Vec<&ImageRecord> = all
        .iter()
        .filter(|r| {
            r.target.digest == rec.target.digest || rec_id.as_ref().is_some_and(|id| &store.own_id(&r.target) == id)
        })
        .collect();
    let to_untag: Vec<&ImageRecord> = if by_name {
        // docker's: when no other tag of the repository is left on the image, its names
        // there pinned by digest go with the tag.
        let repo = rec.name.as_ref().map(Reference::repository);
        let of_repo = |r: &ImageRecord| r.name.as_ref().map(Reference::repository) == repo;
        let tags_left = same
            .iter()
            .any(|r| of_repo(r) && r.name != rec.name && r.name.as_ref().is_some_and(|n| n.digest().is_none()));
        same.iter().copied().filter(|r| r.name == rec.name || (!tags_left && of_repo(r))).collect()
    } else if let Some(pinned) = pinned {
        let repo = pinned.repository();
        let names: Vec<&ImageRecord> =
            same.iter().copied().filter(|r| r.name.as_ref().is_some_and(|n| n.repository() == repo)).collect();
        if names.len() > 1 && !force {
            bail!("unable to delete {what} (must be forced): {} names of that repository refer to it", names.len());
        }
        names
    } else {
        let names = same.iter().filter(|r| r.name.is_some()).count();
        if names > 1 && !force {
            bail!("unable to delete {what} (must be forced): image is referenced in {names} names");
        }
        same.clone()
    };
    let last = to_untag.len() == same.len();
    let delete = last && !check_users(what, &same, (force, last, rec_id.as_ref()), containers)?;
    // Read before any name goes. An image that cannot be read is still removed, shown by
    // its manifest's digest.
    let shown = match delete {
        true => deletable_ids(store, &rec.target)
            .unwrap_or_else(|_| vec![(rec.target.digest.clone(), vec![rec.target.digest.clone()])]),
        false => vec![],
    };
    let mut out = std::io::stdout().lock();
    for r in &to_untag {
        match &r.name {
            Some(n) => {
                store.remove_name(n)?;
                writeln!(out, "Untagged: {}", n.familiar())?;
            }
            None => {
                store.remove_dangling(&r.target.digest)?;
            }
        }
    }
    if last && !delete {
        // Untagged under a running container: the image stays, dangling, as docker's.
        store.add_dangling(&rec.target)?;
    }
    if delete {
        let mut blobs = BTreeSet::new();
        for r in &same {
            store.reachable(&r.target, &mut blobs)?;
        }
        let deleted = store.delete_unreferenced(&blobs)?;
        for (id, blobs) in shown {
            if blobs.iter().any(|b| deleted.contains(b)) {
                writeln!(out, "Deleted: {id}")?;
            }
        }
    }
    Ok(())
}

/// docker's conflicts of `rmi` with the containers of the image's records `same`, for a
/// removal that takes its `last` name: without -f, any container; by ID (`id`), a running
/// one even with -f. Returns whether a running container uses it (then, by name with -f,
/// the image is only untagged and stays).
fn check_users(
    what: &str,
    same: &[&ImageRecord],
    (force, last, id): (bool, bool, Option<&oci::Digest>),
    containers: &[runner::container::Container],
) -> Result<bool> {
    let uses =
        |c: &&runner::container::Container| same.iter().any(|r| c.config.manifest == r.target.digest.to_string());
    let user = containers.iter().find(uses);
    let running = containers
        .iter()
        .filter(uses)
        .find(|c| c.state().is_ok_and(|s| s.status == runner::container::Status::Running));
    if let (Some(c), false, true) = (user, force, last) {
        bail!(
            "conflict: unable to remove repository reference {what:?} (must force) - container {} is using its referenced image",
            c.short_id()
        );
    }
    if let (Some(c), Some(id), true) = (running, id, last) {
        bail!(
            "conflict: unable to delete {} (cannot be forced) - image is being used by running container {}",
            id.short(),
            c.short_id()
        );
    }
    Ok(running.is_some())
}

/// The IDs `rmi` reports when `target` goes, each with the blobs whose deletion means it
/// went: an image's ID (its config, or its manifest); for an index, its digest, then the
/// ID of each of its images in the store (those nothing else uses go with it).
fn deletable_ids(store: &ImageStore, target: &oci::Target) -> Result<Vec<(oci::Digest, Vec<oci::Digest>)>> {
    if !oci::media::is_index(&target.media_type) {
        // Gone when its config is: another manifest of the same image (another name's)
        // keeps the ID, and docker then says only `Untagged`.
        let img = store.image(target)?;
        return Ok(vec![(img.id.clone(), vec![img.id])]);
    }
    let mut out = vec![(target.digest.clone(), vec![target.digest.clone()])];
    for c in oci::index::children(store, target)? {
        if let Some(img) = c.image {
            out.push((img.id.clone(), vec![img.id, c.entry.target.digest]));
        }
    }
    Ok(out)
}

/// Display detailed information on one or more containers or images, as JSON
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth inspect busybox\n  berth inspect app:ci | jq '.[0].Config.Env'\n  berth inspect --format '{{.State.Health.Status}}' web"
)]
pub struct Inspect {
    /// Containers (names or IDs), images (names or image IDs), networks or volumes; a container of that name comes first, then an image
    #[arg(required = true, value_name = "NAME|ID")]
    images: Vec<String>,
    /// Only containers, images, networks or volumes
    #[arg(long = "type", value_parser = ["container", "image", "network", "volume"])]
    kind: Option<String>,
    /// Print a Go template per object instead of the JSON: {{.State.Status}},
    /// {{range .Mounts}}{{.Source}} {{end}}, {{index .Config.Labels "k"}}, {{json .Config}}
    #[arg(short, long)]
    format: Option<String>,
}

impl Inspect {
    /// The same inspection of one kind only (`container inspect`, `image inspect`), unless
    /// `--type` asked for one.
    pub fn only(mut self, kind: &str) -> Inspect {
        self.kind.get_or_insert_with(|| kind.to_owned());
        self
    }

    /// Prints a JSON array with one object per image, in docker's field names. As docker
    /// does, a name that is not found is an error on stderr (and exit 1) after the others
    /// are printed: `[]` when none is.
    pub fn run(self, root: &Path) -> Result<()> {
        // docker's: a template that does not parse is told before anything is looked up,
        // with its exit status 64.
        let tpl = match self.format.as_deref().map(format::Template::parse).transpose() {
            Ok(t) => t,
            Err(e) => {
                eprintln!("berth: template parsing error: {e:#}");
                std::process::exit(64);
            }
        };
        let store = open_store(root)?;
        let all = store.list()?;
        let found = self.images.iter().map(|what| self.one(root, &store, &all, what)).collect();
        super::print_inspected(found, tpl.as_ref())
    }

    /// The object `what` names: a container (unless `--type image`), else an image.
    fn one(&self, root: &Path, store: &ImageStore, all: &[ImageRecord], what: &str) -> Result<serde_json::Value> {
        if self.kind.as_deref().is_none_or(|k| k == "container") {
            match runner::container::find(root, what) {
                Ok(c) => return super::container::inspect_json(&c),
                Err(e) if self.kind.as_deref() == Some("container") => return Err(e.into()),
                Err(_) => {}
            }
        }
        match self.kind.as_deref() {
            Some("network") => return super::network::inspect_json(root, what),
            Some("volume") => return super::volume::inspect_json(root, what),
            _ => {}
        }
        match store.resolve(what) {
            Ok(rec) => inspect_image(store, all, &rec),
            // docker's order: containers, images, networks, then volumes.
            Err(e) if self.kind.is_none() => super::network::inspect_json(root, what)
                .or_else(|_| super::volume::inspect_json(root, what))
                .map_err(|_| e.into()),
            Err(e) => Err(e.into()),
        }
    }
}

/// `inspect` of one image in docker's field names. An index (a multi-platform image) is
/// shown as docker shows one: its digest as `Id`, the host's image's config and layers when
/// the store has it, and every platform's image under `Manifests`.
fn inspect_image(store: &ImageStore, all: &[ImageRecord], rec: &ImageRecord) -> Result<serde_json::Value> {
    let names: Vec<&Reference> =
        all.iter().filter(|r| r.target.digest == rec.target.digest).filter_map(|r| r.name.as_ref()).collect();
    let repo_tags: Vec<String> = names.iter().filter(|n| n.tag().is_some()).map(|n| n.familiar()).collect();
    let repo_digests = repo_digests(store, all, rec)?;
    let index = oci::media::is_index(&rec.target.media_type);
    let children = match index {
        true => oci::index::children(store, &rec.target)?,
        false => vec![],
    };
    let host = oci::Platform::host();
    // The host's image, or the only one, as `run` would pick it.
    let img = match (index, children.as_slice()) {
        (false, _) => Some(store.image(&rec.target)?),
        (true, [only]) => only.image.clone(),
        (true, _) => children.iter().find(|c| c.entry.platform == host).and_then(|c| c.image.clone()),
    };
    let mut obj = json!({
        "Id": if index { rec.target.digest.to_string() } else { img.as_ref().map(|i| i.id.to_string()).unwrap_or_default() },
        "RepoTags": repo_tags,
        "RepoDigests": repo_digests,
        "Descriptor": {
            "mediaType": rec.target.media_type,
            "digest": rec.target.digest.to_string(),
            "size": rec.target.size,
        },
    });
    if let Some(img) = &img {
        let config: serde_json::Value = serde_json::from_slice(&img.config_bytes)?;
        for key in ["created", "author", "comment", "architecture", "variant", "os", "config", "history"] {
            let field = match key {
                "os" => "Os".to_owned(),
                k => k[..1].to_uppercase() + &k[1..],
            };
            obj[field] = config.get(key).cloned().unwrap_or_default();
        }
        // docker's names for the config's `rootfs`: `{{.RootFS.Layers}}` works as there.
        if let Some(rootfs) = config.get("rootfs") {
            obj["RootFS"] = json!({ "Type": rootfs.get("type"), "Layers": rootfs.get("diff_ids") });
        }
        obj["Size"] = json!(store.unpacked_size(img)?);
        obj["VirtualSize"] = obj["Size"].clone();
        obj["Manifest"] = json!({ "digest": img.manifest_digest.to_string(), "layers": img.manifest.layers() });
    }
    if index {
        obj["Manifests"] = children_json(store, &children)?;
    }
    // Fields the config does not have are left out rather than shown as null.
    if let Some(map) = obj.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    Ok(obj)
}

/// docker's `RepoDigests`: `repo@digest` for each name of the image pinned by digest (a pull
/// by digest, a multi-platform pull's index), and for each tag whose manifest the registry
/// of that repository is known to have (pulled or pushed there). A built image that was
/// never pushed has none.
fn repo_digests(store: &ImageStore, all: &[ImageRecord], rec: &ImageRecord) -> Result<Vec<String>> {
    let id = store.own_id(&rec.target);
    // The image's named records, each config read once.
    let same: Vec<&ImageRecord> = all
        .iter()
        .filter(|r| r.name.is_some() && (r.target.digest == rec.target.digest || store.own_id(&r.target) == id))
        .collect();
    let names: Vec<&Reference> = same.iter().filter_map(|r| r.name.as_ref()).collect();
    let mut out: BTreeSet<String> =
        names.iter().filter_map(|n| n.digest().map(|d| format!("{}@{d}", n.familiar_name()))).collect();
    // A tag's own manifest only where no digest pins the repository (a multi-platform
    // image's is its index's).
    let pinned: BTreeSet<String> = names.iter().filter(|n| n.digest().is_some()).map(|n| n.repository()).collect();
    for r in same {
        let Some(name) = r.name.as_ref().filter(|n| n.digest().is_none() && !pinned.contains(&n.repository())) else {
            continue;
        };
        if store.sources(&r.target.digest)?.contains(&name.repository()) {
            out.insert(format!("{}@{}", name.familiar_name(), r.target.digest));
        }
    }
    Ok(out.into_iter().collect())
}

/// An index's images as docker's `Manifests` field lists them: descriptor with platform,
/// whether the store has the image, its ID and unpacked size.
fn children_json(store: &ImageStore, children: &[oci::index::Child]) -> Result<serde_json::Value> {
    let mut out = Vec::new();
    for c in children {
        let mut m = json!({
            "Descriptor": {
                "mediaType": c.entry.target.media_type,
                "digest": c.entry.target.digest.to_string(),
                "size": c.entry.target.size,
                "platform": c.entry.platform.to_json(),
            },
            "Available": c.image.is_some(),
            "Kind": "image",
        });
        if let Some(img) = &c.image {
            m["ImageData"] = json!({ "Id": img.id.to_string(), "Size": { "Unpacked": store.unpacked_size(img)? } });
        }
        out.push(m);
    }
    Ok(json!(out))
}

/// Show the history of an image
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  berth history busybox\n  berth history --no-trunc app:ci")]
pub struct History {
    /// The image: a name or an image ID
    image: String,
    /// Don't truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Print sizes and dates in human readable format (`-H=false`: bytes and RFC 3339 times)
    #[arg(short = 'H', long, default_value = "true", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set, value_name = "true|false",
          hide_default_value = true, value_parser = clap::builder::BoolishValueParser::new())]
    human: bool,
    /// Output format: table, json (one object per line), a Go template per entry
    /// (`{{.CreatedBy}}`), or `table TEMPLATE`
    #[arg(long, default_value = "table")]
    format: String,
}

/// The column titles of `history --format 'table ...'`, docker's.
const HISTORY_TITLES: [(&str, &str); 6] = [
    ("ID", "IMAGE"),
    ("CreatedAt", "CREATED AT"),
    ("CreatedSince", "CREATED"),
    ("CreatedBy", "CREATED BY"),
    ("Size", "SIZE"),
    ("Comment", "COMMENT"),
];

impl History {
    /// One row per history entry, newest first; entries that made a layer show its size.
    pub fn run(self, root: &Path) -> Result<()> {
        let list_format = format::ListFormat::parse(&self.format)?;
        let store = open_store(root)?;
        let rec = store.resolve(&self.image)?;
        let img = store.image(&rec.target)?;
        let mut layers = store.unpacked_sizes(&img)?.into_iter();
        let history = img.config.history().clone().unwrap_or_default();
        let mut rows = Vec::new();
        for (i, h) in history.iter().enumerate() {
            let size = if h.empty_layer().unwrap_or(false) { 0 } else { layers.next().unwrap_or(0) };
            let created =
                h.created().as_deref().and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok()).map(|t| t.to_utc());
            let id = match (i + 1 == history.len(), self.no_trunc) {
                (true, true) => img.id.to_string(),
                (true, false) => img.id.short().to_owned(),
                (false, _) => "<missing>".to_owned(),
            };
            let mut by = h.created_by().clone().unwrap_or_default();
            if !self.no_trunc && by.chars().count() > 45 {
                by = by.chars().take(44).collect::<String>() + "…";
            }
            rows.push((id, created, by, size, h.comment().clone().unwrap_or_default()));
        }
        rows.reverse();
        // docker's -H=false: RFC 3339 times and sizes in bytes.
        let rfc3339 = |c: Option<chrono::DateTime<chrono::Utc>>| {
            c.map_or_else(|| "N/A".to_owned(), |c| c.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        };
        let since = |c| if self.human { format::since(c) } else { rfc3339(c) };
        let size = |n: u64| if self.human { format::size(n) } else { n.to_string() };
        let mut out = std::io::stdout().lock();
        if !matches!(list_format, format::ListFormat::Default) {
            let objs: Vec<_> = rows.into_iter().map(|(id, created, by, bytes, comment)| {
                json!({"ID": id, "CreatedAt": created.map(|c| c.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)), "CreatedSince": since(created),
                       "CreatedBy": by, "Size": size(bytes), "Comment": comment})
            }).collect();
            write!(out, "{}", list_format.render(&HISTORY_TITLES, &objs)?)?;
            return Ok(());
        }
        let mut table = vec![["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"].map(String::from).to_vec()];
        for (id, created, by, bytes, comment) in rows {
            table.push(vec![id, since(created), by, size(bytes), comment]);
        }
        write!(out, "{}", format::table(&table))?;
        Ok(())
    }
}

/// Remove untagged images and blobs no image uses
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth prune -f\n  berth prune -f --grace 0s   # also blobs written in the last hour"
)]
pub struct Prune {
    /// Remove every image no container uses, not only untagged ones
    #[arg(short, long)]
    all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
    /// Spare blobs younger than this, so a build or pull running now keeps its blobs
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    grace: Duration,
}

impl Prune {
    /// Drops dangling images, then sweeps unreachable blobs older than the grace period.
    pub fn run(self, root: &Path) -> Result<()> {
        let what = if self.all {
            "all images without at least one container associated to them"
        } else {
            "all untagged images"
        };
        // As docker's: the answer is read from stdin (`echo y | berth image prune`).
        if !self.force && !super::confirm(&format!("WARNING! This will remove {what} and unused blobs."))? {
            return Ok(());
        }
        let store = open_store(root)?;
        let used = container_images(root)?;
        let untagged = if self.all { untag_unused(&store, &used, &|_| true)? } else { Vec::new() };
        let report = store.prune(self.grace, &used)?;
        // Then the snapshots: those no image uses any more and no running build or container
        // holds, and what stopped processes left.
        let snapshots = runner::snapshot::usage::prune(root, &store).context("prune layer snapshots")?;
        let mut out = std::io::stdout().lock();
        if !report.images.is_empty() || !untagged.is_empty() {
            writeln!(out, "Deleted Images:")?;
            for u in &untagged {
                writeln!(out, "{u}")?;
            }
            for d in &report.images {
                writeln!(out, "deleted: {d}")?;
            }
            writeln!(out)?;
        }
        writeln!(out, "Deleted blobs: {}", report.blobs)?;
        writeln!(out, "Deleted layer snapshots: {}", snapshots.count)?;
        writeln!(out, "Total reclaimed space: {}", format::size(report.bytes + snapshots.bytes))?;
        Ok(())
    }
}

/// The manifests containers were made from: prune keeps them, named or not, as docker does.
pub fn container_images(root: &Path) -> Result<std::collections::HashSet<oci::Digest>> {
    Ok(runner::container::list(root)?.into_iter().filter_map(|c| c.config.manifest.parse().ok()).collect())
}

/// Removes the name of every image that is not in `used` (the images of containers, from
/// [`container_images`]) and that `chosen` picks (`prune -a`): docker's "untagged:" lines.
/// The blobs go with the store's prune that follows.
pub fn untag_unused(
    store: &ImageStore,
    used: &std::collections::HashSet<oci::Digest>,
    chosen: &dyn Fn(&ImageRecord) -> bool,
) -> Result<Vec<String>> {
    let mut untagged = Vec::new();
    for rec in store.list()? {
        let Some(name) = rec.name.as_ref().filter(|_| !used.contains(&rec.target.digest)) else { continue };
        if !chosen(&rec) {
            continue;
        }
        store.remove_name(name)?;
        untagged.push(format!("untagged: {}", name.familiar()));
    }
    Ok(untagged)
}

/// Parses `90s`, `10m`, `1h`, `2d` (or a bare number of seconds).
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?} (try 30s, 10m, 1h)"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("invalid duration unit in {s:?} (s, m, h, d)")),
    };
    Ok(Duration::from_secs(n * mult))
}
