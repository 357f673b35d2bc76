//! Commands that move images in and out of the store as files: save, load, import.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::open_store;
use oci::layer::{Compression, LayerReader};
use oci::layout::{self, TarSink};
use oci::store::ImportOptions;
use oci::{ImageRecord, Reference};

/// Save one or more images to a tar archive (streamed to STDOUT by default)
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth save -o busybox.tar busybox\n  berth save --format oci -o app.tar app:ci app:latest\n  berth save app | gzip > app.tar.gz"
)]
pub struct Save {
    /// Write to a file, instead of STDOUT
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Archive format: docker (`docker save`, manifest.json) or oci (an OCI image layout)
    #[arg(long, default_value = "docker", value_parser = ["docker", "oci"])]
    format: String,
    /// Images to save: names or image IDs
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

impl Save {
    /// Streams the images' blobs into the archive; a file is written under a temporary
    /// name and renamed when complete, so a failed save leaves no partial archive.
    pub fn run(self, root: &Path) -> Result<()> {
        let store = open_store(root)?;
        let images = self.images.iter().map(|i| resolve_for_save(&store, i)).collect::<oci::Result<Vec<_>>>()?;
        let write = |out: &mut dyn Write| -> Result<()> {
            let mut sink = TarSink::new(out);
            match self.format.as_str() {
                "oci" => layout::write_oci(&store, &images, &mut sink)?,
                _ => layout::write_docker(&store, &images, &mut sink)?,
            }
            sink.finish()?.flush()?;
            Ok(())
        };
        match &self.output {
            Some(path) => {
                let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                let tmp = tempfile::Builder::new()
                    .prefix(".berth-save-")
                    .tempfile_in(dir)
                    .with_context(|| format!("create a file in {}", dir.display()))?;
                let mut out = BufWriter::with_capacity(1 << 20, tmp);
                write(&mut out)?;
                let tmp = out.into_inner().map_err(|e| e.into_error())?;
                tmp.as_file().sync_all()?;
                // Temporary files are private (0600); an archive is an ordinary file.
                tmp.as_file().set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
                tmp.persist(path).with_context(|| format!("write {}", path.display()))?;
            }
            None => {
                if io::stdout().is_terminal() {
                    bail!("refusing to write an archive to a terminal: use -o FILE or a pipe");
                }
                write(&mut BufWriter::with_capacity(1 << 20, io::stdout().lock()))?;
            }
        }
        Ok(())
    }
}

/// The record `save` writes for `what`: an image saved by name keeps that name; one saved by
/// ID (or by anything but its name) is written without one, as docker writes `"RepoTags":null`,
/// rather than under whichever of its names the store happened to list first.
fn resolve_for_save(store: &oci::ImageStore, what: &str) -> oci::Result<ImageRecord> {
    let mut rec = store.resolve(what)?;
    if what.parse::<Reference>().ok() != rec.name {
        rec.name = None;
    }
    Ok(rec)
}

/// Load images from a tar archive (docker or OCI, plain or compressed) or an OCI layout directory
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth load -i busybox.tar\n  gunzip -c app.tar.gz | berth load\n  berth load -i ./oci-layout-dir"
)]
pub struct Load {
    /// Read from this archive (or OCI layout directory) instead of STDIN
    #[arg(short, long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Suppress the load output (docker's progress; the loaded images are still printed)
    #[arg(short, long)]
    quiet: bool,
}

impl Load {
    /// Stages every file of the archive into the content store (verifying digests),
    /// then names the images it describes.
    pub fn run(self, root: &Path) -> Result<()> {
        let store = open_store(root)?;
        let loaded = match &self.input {
            Some(p) if p.is_dir() => layout::load_oci_dir(&store, p)?,
            Some(p) => {
                let f = File::open(p).with_context(|| format!("open {}", p.display()))?;
                load_any(&store, f, &p.display().to_string())?
            }
            None => {
                if io::stdin().is_terminal() {
                    bail!("requested load from STDIN, but STDIN is a terminal: use -i FILE or a pipe");
                }
                load_any(&store, io::stdin().lock(), "STDIN")?
            }
        };
        // docker's -q hides only its progress, which berth does not show: what was loaded is
        // printed either way, as docker prints it.
        let mut out = io::stdout().lock();
        for rec in loaded {
            match rec.name {
                Some(n) => writeln!(out, "Loaded image: {}", n.familiar())?,
                None => writeln!(out, "Loaded image ID: {}", store.image(&rec.target)?.id)?,
            }
        }
        Ok(())
    }
}

fn load_any(store: &oci::ImageStore, input: impl Read, name: &str) -> Result<Vec<ImageRecord>> {
    // docker load takes gzip/zstd-compressed archives too; the layer reader sniffs that.
    let plain = LayerReader::new(input, u64::MAX).with_context(|| format!("read {name}"))?;
    Ok(layout::load_tar(store, plain, name)?)
}

/// Import the contents from a tarball to create a filesystem image
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth import rootfs.tar busybox:latest\n  tar -C rootfs -c . | berth import - app:base\n  berth import --platform linux/arm64 rootfs-arm64.tar busybox:arm64"
)]
pub struct Import {
    /// A rootfs tarball (plain, gzip or zstd), or - for STDIN
    file: String,
    /// The name to give the image
    #[arg(value_name = "REPOSITORY[:TAG]")]
    reference: Option<String>,
    /// Set commit message for imported image
    #[arg(short, long)]
    message: Option<String>,
    /// Layer compression: gzip, zstd or uncompressed
    #[arg(long, default_value = "gzip")]
    compression: Compression,
    /// The platform the image's config records (os/arch[/variant]); the host's by default
    #[arg(long)]
    platform: Option<oci::Platform>,
    /// Apply a Dockerfile instruction to the image's config (CMD, ENTRYPOINT, ENV, EXPOSE,
    /// LABEL, ONBUILD, USER, VOLUME, WORKDIR); repeatable
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    change: Vec<String>,
}

impl Import {
    /// Streams the tarball into one compressed layer and prints the new image ID.
    pub fn run(self, root: &Path) -> Result<()> {
        let name = self.reference.as_deref().map(str::parse::<Reference>).transpose()?;
        if name.as_ref().is_some_and(|n| n.digest().is_some()) {
            bail!("an imported image cannot be named by digest");
        }
        let mut config = serde_json::Map::new();
        builder::changes::apply(&mut config, &self.change)?;
        if config.contains_key("OnBuild") {
            // The OCI config berth writes for an import has no OnBuild field.
            bail!("--change ONBUILD is not supported by import: use berth commit or a Dockerfile");
        }
        let store = open_store(root)?;
        let opts = ImportOptions {
            compression: self.compression,
            message: self.message.clone(),
            source: self.file.clone(),
            platform: self.platform.clone(),
            config: (!self.change.is_empty()).then_some(serde_json::Value::Object(config)),
        };
        if self.file == "-" && io::stdin().is_terminal() {
            bail!("requested import from STDIN, but STDIN is a terminal: give a file or a pipe");
        }
        let rec = if self.file == "-" {
            store.import_rootfs(io::stdin().lock(), name.as_ref(), &opts)
        } else {
            let f = File::open(&self.file).with_context(|| format!("open {}", self.file))?;
            store.import_rootfs(f, name.as_ref(), &opts)
        }
        .with_context(|| format!("import {}", self.file))?;
        println!("{}", store.image(&rec.target)?.id);
        Ok(())
    }
}
