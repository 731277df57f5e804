//! Compiles `faultinject.c` into a shared library for `LD_PRELOAD` (Linux only), with the
//! system's C compiler (`cc`), into the build's output folder.

#![allow(clippy::expect_used)] // a build script reports a missing compiler by failing

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=faultinject.c");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let library = out.join("libhearthfault.so");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o"])
        .arg(&library)
        .arg("faultinject.c")
        .arg("-ldl")
        .status()
        .expect("a C compiler (cc) builds the fault library");
    assert!(built.success(), "the fault library did not build");
    println!("cargo:rustc-env=HEARTH_FAULT_LIBRARY={}", library.display());
}
