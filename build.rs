//! Compiles fastpm's PHP SAPI (`src/sys/php_embed/shim.c`) into a shared object that the
//! binary carries (see `sys::php_embed`), when PHP 8.2's headers are here (Debian: php8.2-dev).
//! Without them fastpm builds all the same; a pool with `php_children = "embedded"` is then
//! refused at start with the reason. PHP's symbols stay undefined in the object: a worker
//! resolves them from libphp8.2.so, which it loads first, so fastpm never links libphp.

use std::path::PathBuf;
use std::process::Command;

const SHIM: &str = "src/sys/php_embed/shim.c";
const DPKG_STATUS: &str = "/var/lib/dpkg/status";

fn main() {
    println!("cargo:rerun-if-changed={SHIM}");
    println!("cargo:rerun-if-changed=build.rs");
    // Built again once PHP's headers arrive. php-config8.2 itself cannot tell: dpkg keeps the
    // package's mtime, older than the last build; dpkg's status file changes on every install.
    println!("cargo:rerun-if-changed=/usr/bin/php-config8.2");
    if std::path::Path::new(DPKG_STATUS).exists() {
        println!("cargo:rerun-if-changed={DPKG_STATUS}");
    }
    println!("cargo:rustc-check-cfg=cfg(fastpm_php_shim)");
    let Some(includes) = php_includes() else {
        println!(
            "cargo:warning=PHP 8.2 headers not found (php-config8.2): php_children = \"embedded\" is unavailable in this build"
        );
        return;
    };
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("fastpm-php-shim.so");
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&compiler)
        .args([
            "-shared",
            "-fPIC",
            "-O2",
            "-Wall",
            "-Werror=implicit-function-declaration",
            "-o",
        ])
        .arg(&object)
        .arg(SHIM)
        .args(includes.split_whitespace())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(status.success(), "{compiler} failed on {SHIM}");
    println!("cargo:rustc-cfg=fastpm_php_shim");
}

/// `php-config8.2 --includes`, if PHP 8.2's development files are installed.
fn php_includes() -> Option<String> {
    let output = Command::new("php-config8.2")
        .arg("--includes")
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&output.stdout).trim().to_string())
}
