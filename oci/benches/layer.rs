//! Layer creation throughput on a directory tree: `cargo bench -p oci --bench layer -- TREE`.
//!
//! Each mode runs in a child process of its own, so that the peak RSS it reports is that
//! mode's alone. Rows match bench/layer.sh's peers: seconds, MB/s of uncompressed tar
//! (1 MB = 10^6 bytes), peak RSS in MB.

use std::io::{self, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use oci::digest::{Algorithm, HashingWriter};
use oci::layer::{tar_directory, Compression, LayerWriter, TarOptions};

const MODES: [(&str, &str); 4] = [
    ("sha256", "berth tar + sha256"),
    ("none", "berth layer (uncompressed)"),
    ("gzip", "berth layer gzip"),
    ("zstd", "berth layer zstd"),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    match args.as_slice() {
        [mode, tree] if MODES.iter().any(|(m, _)| m == mode) => child(mode, Path::new(tree)),
        [tree] => parent(tree),
        _ => {
            eprintln!("usage: cargo bench -p oci --bench layer -- TREE");
            std::process::exit(2);
        }
    }
}

fn parent(tree: &str) {
    let exe = std::env::current_exe().expect("current exe");
    let runs: usize = std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(1);
    for (mode, label) in MODES {
        let mut best: Option<(f64, f64, f64)> = None;
        for _ in 0..runs {
            let out = Command::new(&exe).args([mode, tree]).output().expect("run bench child");
            assert!(out.status.success(), "{mode}: {}", String::from_utf8_lossy(&out.stderr));
            let line = String::from_utf8_lossy(&out.stdout);
            let v: Vec<f64> = line.split_whitespace().map(|x| x.parse().expect("number")).collect();
            let (secs, bytes, rss) = (v[0], v[1], v[2]);
            if best.is_none_or(|b| secs < b.0) {
                best = Some((secs, bytes, rss));
            }
        }
        let (secs, bytes, rss) = best.expect("at least one run");
        println!("{label:<30}{secs:7.2}{:9.1}{:13.1}", bytes / 1e6 / secs, rss / 1e6);
    }
}

fn child(mode: &str, tree: &Path) {
    let opts = TarOptions::from_env();
    let start = Instant::now();
    let bytes = if mode == "sha256" {
        let mut w = HashingWriter::new(io::sink(), Algorithm::Sha256);
        tar_directory(tree, &mut w, &opts).expect("tar");
        w.count()
    } else {
        let compression = match mode {
            "gzip" => Compression::Gzip,
            "zstd" => Compression::Zstd,
            _ => Compression::None,
        };
        let mut w = LayerWriter::new(io::sink(), compression).expect("layer writer");
        tar_directory(tree, &mut w, &opts).expect("tar");
        let (_, info) = w.finish().expect("finish");
        info.uncompressed_size
    };
    let secs = start.elapsed().as_secs_f64();
    let rss = peak_rss_bytes();
    let mut out = io::stdout().lock();
    writeln!(out, "{secs} {bytes} {rss}").expect("stdout");
}

/// Peak resident set size of this process, in bytes.
fn peak_rss_bytes() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kib * 1024.0
}
