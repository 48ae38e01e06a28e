//! Records what `ovlfs --version` reports about the build: the git commit when built from a
//! checkout (with `-dirty` for uncommitted changes), the target and the compiler. Outside a
//! checkout (a crate tarball) or without git, the commit is simply left out.

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `abc1234` or `abc1234-dirty`, when `dir` is the top of a git checkout.
fn commit(dir: &Path) -> Option<String> {
    // Only this repository's own checkout: a tarball unpacked inside another repository
    // (a distribution's packaging tree) must not report that repository's commit.
    if !dir.join(".git").exists() {
        return None;
    }
    let hash = git(dir, &["rev-parse", "--short", "HEAD"])?;
    // Rebuild when HEAD moves (a worktree's git dir holds its HEAD; branch refs live in the
    // common dir). Not on index changes: `git status` itself may rewrite the index.
    for (which, files) in [
        ("--git-dir", &["HEAD"][..]),
        ("--git-common-dir", &["packed-refs"][..]),
    ] {
        if let Some(d) = git(dir, &["rev-parse", which]) {
            let d = dir.join(d);
            for f in files {
                println!("cargo:rerun-if-changed={}", d.join(f).display());
            }
            if which == "--git-common-dir"
                && let Some(head) = git(dir, &["symbolic-ref", "-q", "HEAD"])
            {
                println!("cargo:rerun-if-changed={}", d.join(head).display());
            }
        }
    }
    // --no-optional-locks: a build must not rewrite the index (it would look changed).
    let dirty =
        git(dir, &["--no-optional-locks", "status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}

/// The version of `package` that Cargo.lock pins, if there is a lock file.
fn locked_version(lock: &Path, package: &str) -> Option<String> {
    let text = std::fs::read_to_string(lock).ok()?;
    let mut lines = text.lines();
    let name_line = format!("name = \"{package}\"");
    lines.find(|l| l.trim() == name_line)?;
    let version = lines.next()?.trim().strip_prefix("version = \"")?;
    Some(version.trim_end_matches('"').to_owned())
}

fn main() {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&dir);
    println!("cargo:rerun-if-changed=build.rs");
    // Edits to tracked files change the -dirty mark.
    for tracked in ["src", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", dir.join(tracked).display());
    }
    if let Some(c) = commit(dir) {
        println!("cargo:rustc-env=OVLFS_GIT_COMMIT={c}");
    }
    if let Some(v) = locked_version(&dir.join("Cargo.lock"), "fuser") {
        println!("cargo:rustc-env=OVLFS_FUSER_VERSION={v}");
    }
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=OVLFS_TARGET={target}");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!("cargo:rustc-env=OVLFS_RUSTC={rustc_version}");
}
