//! Build script of the berth binary: links libstdc++ statically (see `static_libstdcxx`) and
//! names the commit and the compiler for `berth version` (see `version_facts`).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    static_libstdcxx();
    version_facts();
}

/// Sets `BERTH_GIT_COMMIT` (the checkout's short commit, `unknown` outside git) and
/// `BERTH_RUSTC_VERSION` for `berth version`. The commit is read again when HEAD or the
/// branch it names moves, so a commit relinks the binary but a build needs no git at all.
fn version_facts() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]);
    println!("cargo:rustc-env=BERTH_GIT_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
    if commit.is_some() {
        for file in ["HEAD", "packed-refs"] {
            if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", file]) {
                println!("cargo:rerun-if-changed={path}");
            }
        }
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &branch]) {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc).arg("--version").output().ok().filter(|o| o.status.success());
    let version = version.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    println!("cargo:rustc-env=BERTH_RUSTC_VERSION={}", version.as_deref().unwrap_or("unknown"));
}

/// librocksdb-sys asks for `-lstdc++`, which the linker resolves to the shared library, and
/// every berth process then pays the dynamic loader for ~2,000 C++ symbol lookups before
/// `main`: 0.6–0.8 ms of each `berth run` (bench/run.sh). A directory that holds only
/// `libstdc++.a`, searched before the system's, makes that same `-lstdc++` link the archive.
/// Where the compiler has no static libstdc++, berth links the shared one as before.
fn static_libstdcxx() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CXX");
    // Only for a native Linux build: the host's compiler would hand a cross build the
    // wrong architecture's archive.
    let native = std::env::var("TARGET").ok() == std::env::var("HOST").ok();
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") || !native {
        return;
    }
    // CXX may carry arguments (`ccache g++`).
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
    let mut words = cxx.split_whitespace();
    let Some(program) = words.next() else { return };
    let Ok(out) = Command::new(program).args(words).arg("-print-file-name=libstdc++.a").output() else {
        println!("cargo:warning=no {cxx} to find libstdc++.a: linking the shared libstdc++");
        return;
    };
    let archive = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    // An unknown file name is echoed back as it was asked for, without a directory.
    if !archive.is_absolute() || !archive.exists() {
        println!("cargo:warning=no static libstdc++ with {cxx}: linking the shared one");
        return;
    }
    let dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("static-cxx");
    let link = dir.join("libstdc++.a");
    std::fs::create_dir_all(&dir).expect("create the static-cxx directory");
    match std::fs::remove_file(&link) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("remove {}: {e}", link.display()),
    }
    std::os::unix::fs::symlink(&archive, &link).expect("link libstdc++.a");
    // A compiler upgrade replaces the archive: link again then.
    println!("cargo:rerun-if-changed={}", archive.display());
    println!("cargo:rustc-link-search=native={}", dir.display());
}
