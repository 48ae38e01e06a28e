//! The ovlfs demo: builds sample layers in a temp dir, runs the `ovlfs` binary on them as a
//! daemon (as a user or containers/storage would), shows the merged view, makes some changes,
//! unmounts with `fusermount3 -u`, and shows what landed in the upper layer.
//!
//! Run with `cargo build --release && cargo run --release --example demo` (as root, or as a
//! user who may use /dev/fuse); `bash .ci/run demo` does both.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    if let Err(e) = run() {
        eprintln!("demo failed: {e}");
        std::process::exit(1);
    }
}

fn write(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, text)
}

/// Two lowers and an empty upper. The middle layer deletes `etc/motd` with a whiteout (an
/// AUFS `.wh.` file, as container image layers carry them) and replaces `var/cache` with an
/// opaque directory.
fn build_layers(root: &Path) -> std::io::Result<(PathBuf, PathBuf, PathBuf, PathBuf, PathBuf)> {
    let base = root.join("base");
    let app = root.join("app");
    let (upper, work, merged) = (root.join("upper"), root.join("work"), root.join("merged"));
    write(&base.join("etc/hostname"), "base-host\n")?;
    write(&base.join("etc/motd"), "welcome from the base layer\n")?;
    write(&base.join("var/cache/old.bin"), "stale cache\n")?;
    write(&base.join("README"), "base readme\n")?;
    write(&app.join("etc/hostname"), "app-host\n")?;
    write(&app.join("etc/.wh.motd"), "")?;
    write(&app.join("var/cache/.wh..wh..opq"), "")?;
    write(&app.join("var/cache/fresh.bin"), "fresh cache\n")?;
    write(&app.join("app/main.sh"), "#!/bin/sh\necho hello\n")?;
    for dir in [&upper, &work, &merged] {
        fs::create_dir_all(dir)?;
    }
    Ok((base, app, upper, work, merged))
}

fn show_tree(title: &str, root: &Path) -> std::io::Result<()> {
    println!("--- {title} ---");
    let mut paths = Vec::new();
    walk(root, root, &mut paths)?;
    for line in paths {
        println!("  {line}");
    }
    Ok(())
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path)?;
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        let ft = meta.file_type();
        if ft.is_dir() {
            out.push(format!("{rel}/"));
            walk(root, &path, out)?;
        } else if ft.is_char_device() && meta.rdev() == 0 {
            out.push(format!("{rel}  (whiteout: 0/0 char device)"));
        } else if ft.is_file() {
            let text = fs::read_to_string(&path).unwrap_or_default();
            out.push(format!("{rel}  = {:?}", text.trim_end()));
        } else {
            out.push(format!("{rel}  ({ft:?})"));
        }
    }
    Ok(())
}

/// The `ovlfs` binary next to this example (`target/<profile>/ovlfs`), unless `OVLFS_BIN`
/// names another.
fn ovlfs_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("OVLFS_BIN").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // target/<profile>/examples/demo -> target/<profile>/ovlfs
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("ovlfs"))
        .ok_or("cannot place the ovlfs binary")?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} is missing: build it first (cargo build --release), or set OVLFS_BIN",
            bin.display()
        ))
    }
}

fn is_mounted(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(wanted.as_ref()))
}

/// Unmounts on drop unless already unmounted, so a failing demo leaves no mount behind.
struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        if is_mounted(self.0) {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(self.0)
                .status();
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let ovlfs = ovlfs_binary()?;
    let temp = tempfile::tempdir()?;
    let (base, app, upper, work, merged) = build_layers(temp.path())?;
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        app.display(),
        base.display(),
        upper.display(),
        work.display()
    );
    println!("$ {} -o {opts} {}", ovlfs.display(), merged.display());
    // Without -f ovlfs daemonizes, and returns only once the mount is live.
    let status = Command::new(&ovlfs)
        .arg("-o")
        .arg(&opts)
        .arg(&merged)
        .status()?;
    if !status.success() {
        return Err(format!("ovlfs failed ({status})").into());
    }
    let guard = Mounted(&merged);
    show_tree("merged view (app over base)", &merged)?;
    println!("--- changes through the mount ---");
    println!("  echo 'edited' > etc/hostname   (copy-up of a lower file)");
    fs::write(merged.join("etc/hostname"), "edited\n")?;
    println!("  rm README                      (a lower file: leaves a whiteout)");
    fs::remove_file(merged.join("README"))?;
    println!("  mkdir data && echo hi > data/new.txt");
    fs::create_dir(merged.join("data"))?;
    fs::write(merged.join("data/new.txt"), "hi\n")?;
    show_tree("merged view after the changes", &merged)?;
    println!("$ fusermount3 -u {}", merged.display());
    let status = Command::new("fusermount3")
        .arg("-u")
        .arg(&merged)
        .status()?;
    if !status.success() {
        return Err(format!("fusermount3 -u failed ({status})").into());
    }
    drop(guard);
    show_tree("upper layer on disk", &upper)?;
    println!("unmounted: {}", !is_mounted(&merged));
    Ok(())
}
