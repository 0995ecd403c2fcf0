//! Build check for the `live` feature: libpcap's development files must be present. Without
//! them the build would fail at the very end with a linker error (`cannot find -lpcap`) buried
//! in pages of output; this says what to do instead.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LIBPCAP_LIBDIR");
    if std::env::var_os("CARGO_FEATURE_LIVE").is_none() || !native_linux() {
        return;
    }
    if std::env::var_os("LIBPCAP_LIBDIR").is_some() || pkg_config_has_libpcap() || lib_on_disk() {
        return;
    }
    eprintln!(
        "error: feature `live` needs libpcap's development files (libpcap.so): install them \
         (Debian/Ubuntu: `apt-get install libpcap-dev`, Fedora: `dnf install libpcap-devel`), \
         set LIBPCAP_LIBDIR, or build without live capture: `cargo build --no-default-features`"
    );
    std::process::exit(1);
}

/// The on-disk probe only means something when the build machine is the target machine.
fn native_linux() -> bool {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target = std::env::var("TARGET").unwrap_or_default();
    let host = std::env::var("HOST").unwrap_or_default();
    os == "linux" && target == host
}

fn pkg_config_has_libpcap() -> bool {
    Command::new("pkg-config")
        .args(["--exists", "libpcap"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Systems without pkg-config: look where distributions put the unversioned link name.
fn lib_on_disk() -> bool {
    let mut dirs: Vec<std::path::PathBuf> = ["/usr/lib", "/usr/lib64", "/usr/local/lib", "/lib"]
        .iter()
        .map(Into::into)
        .collect();
    // Debian's multiarch directories, e.g. /usr/lib/x86_64-linux-gnu.
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        dirs.extend(
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().contains("-linux-")),
        );
    }
    dirs.iter()
        .any(|d| Path::new(d).join("libpcap.so").exists())
}
