//! Builds the small C shim through which the gzip encoder calls ISA-L (Debian's
//! libisal-dev, installed by ./setup), and links the system library.

fn main() {
    println!("cargo:rerun-if-changed=csrc/isal_block.c");
    cc::Build::new().file("csrc/isal_block.c").warnings(true).compile("berth_isal");
    println!("cargo:rustc-link-lib=isal");
}
