//! The images of the podman and buildah end-to-end tests: a busybox base image, and reading
//! the layers of a saved image (OCI layout).

use super::*;
use std::collections::BTreeMap;
use std::fs;

// ---------------------------------------------------------------------------------------------
// The base image
// ---------------------------------------------------------------------------------------------

/// Copy the host's busybox (and its libraries, if it is not static) into `root`, with a
/// symlink per applet in /bin.
fn install_busybox(root: &Path) -> Result<(), String> {
    let src = ["/bin", "/usr/bin", "/sbin", "/usr/sbin"]
        .iter()
        .map(|d| Path::new(d).join("busybox"))
        .find(|p| p.exists())
        .ok_or("busybox not found on the host")?;
    let real = fs::canonicalize(&src).map_err(|e| format!("{}: {e}", src.display()))?;
    let bin = root.join("bin");
    mkdirs(&bin);
    fs::copy(&real, bin.join("busybox")).map_err(|e| format!("copy busybox: {e}"))?;
    chmod(&bin.join("busybox"), 0o755);
    let mut c = Command::new(&real);
    c.arg("--list");
    let o = run_cmd(&mut c, CHILD).map_err(|e| format!("busybox --list: {e}"))?;
    if !o.success() {
        return Err(format!("busybox --list: {}", o.stderr.trim()));
    }
    for applet in o.stdout.split_whitespace().filter(|a| *a != "busybox") {
        symlink("busybox", &bin.join(applet));
    }
    if have("ldd") {
        let mut c = Command::new("ldd");
        c.arg(&real);
        // A static busybox makes ldd fail ("not a dynamic executable"): nothing to copy.
        let o = run_cmd(&mut c, CHILD).map_err(|e| format!("ldd: {e}"))?;
        for lib in o.stdout.split_whitespace().filter(|w| w.starts_with('/')) {
            let dst = root.join(lib.trim_start_matches('/'));
            if dst.exists() {
                continue;
            }
            if let Some(parent) = dst.parent() {
                mkdirs(parent);
            }
            let real = fs::canonicalize(lib).map_err(|e| format!("{lib}: {e}"))?;
            fs::copy(&real, &dst).map_err(|e| format!("copy {lib}: {e}"))?;
        }
    }
    Ok(())
}

/// The base image's tree: busybox, plus files whose owners and modes the scenarios check and
/// directories they delete, rename and replace. `user` owns /home/e2e and its file.
///
/// | path              | owner  | mode | content   |
/// |-------------------|--------|------|-----------|
/// | /bin/busybox      | 0:0    | 0755 |           |
/// | /etc/owned23      | 2:3    | 0640 | `s\n`     |
/// | /home/e2e         | user   | 0755 |           |
/// | /home/e2e/owned   | user   | 0644 | `owned\n` |
/// | /m644             | 0:0    | 0644 | `m\n`     |
/// | /d755             | 0:0    | 0755 |           |
/// | /tmp              | 0:0    | 1777 |           |
/// | /data/{g,sub/f}, /keep/{k,k2}, /ren/{a,sub/b}, /rep/old: 0:0, 0644 files, 0755 dirs |
pub(crate) fn base_rootfs(root: &Path, user: (u32, u32)) -> Result<(), String> {
    mkdirs(root);
    chmod(root, 0o755);
    install_busybox(root)?;
    for d in [
        "etc", "proc", "sys", "dev", "run", "var", "root", "home", "d755",
    ] {
        mkdirs(&root.join(d));
        chmod(&root.join(d), 0o755);
    }
    chmod(&root.join("root"), 0o700);
    mkdirs(&root.join("tmp"));
    chmod(&root.join("tmp"), 0o1777);
    file_full(
        &root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        0o644,
        0,
        0,
    );
    file_full(
        &root.join("etc/group"),
        "root:x:0:\nnobody:x:65534:\n",
        0o644,
        0,
        0,
    );
    file_full(&root.join("etc/owned23"), "s\n", 0o640, 2, 3);
    mkdirs(&root.join("home/e2e"));
    chmod(&root.join("home/e2e"), 0o755);
    chown(&root.join("home/e2e"), user.0, user.1);
    file_full(
        &root.join("home/e2e/owned"),
        "owned\n",
        0o644,
        user.0,
        user.1,
    );
    file_full(&root.join("m644"), "m\n", 0o644, 0, 0);
    for (p, c) in [
        ("data/g", "g\n"),
        ("data/sub/f", "f\n"),
        ("keep/k", "k\n"),
        ("keep/k2", "k2\n"),
        ("ren/a", "a\n"),
        ("ren/sub/b", "b\n"),
        ("rep/old", "old\n"),
    ] {
        let f = root.join(p);
        mkdirs(f.parent().expect("parent"));
        file_full(&f, c, 0o644, 0, 0);
    }
    for d in ["data", "data/sub", "keep", "ren", "ren/sub", "rep"] {
        chmod(&root.join(d), 0o755);
    }
    Ok(())
}

/// `DIR/base.tar`: the base image (`base_rootfs`, built in `DIR/rootfs`) as a tarball that
/// `podman import` takes, readable by the test user. Returns its path.
pub(crate) fn base_tarball(dir: &Path, user: (u32, u32)) -> Result<String, String> {
    let rootfs = dir.join("rootfs");
    base_rootfs(&rootfs, user)?;
    let tarball = dir.join("base.tar");
    let mut c = Command::new("tar");
    c.arg("--numeric-owner")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tarball)
        .arg(".");
    let o = run_cmd(&mut c, CHILD).map_err(|e| format!("tar: {e}"))?;
    if !o.success() {
        return Err(format!("tar -c: {}", o.stderr.trim()));
    }
    chmod(dir, 0o755);
    chmod(&tarball, 0o644);
    Ok(tarball.to_string_lossy().into_owned())
}

// ---------------------------------------------------------------------------------------------
// Saved images (OCI layout)
// ---------------------------------------------------------------------------------------------

/// The `"digest":"sha256:..."` values in `text` from byte `from` on.
fn digests_after(text: &str, from: usize) -> Vec<String> {
    let key = "\"digest\":\"sha256:";
    let mut v = Vec::new();
    let mut rest = &text[from..];
    while let Some(i) = rest.find(key) {
        rest = &rest[i + key.len()..];
        v.push(rest[..64].to_string());
    }
    v
}

/// The layer blobs of the (only) image in an OCI layout directory, bottom first.
pub(crate) fn oci_layers(oci: &Path) -> Vec<PathBuf> {
    let index = fs::read_to_string(oci.join("index.json")).expect("index.json");
    let manifest_digest = digests_after(&index, 0)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no manifest digest in index.json: {index}"));
    let manifest =
        fs::read_to_string(oci.join("blobs/sha256").join(&manifest_digest)).expect("manifest blob");
    let layers_at = manifest.find("\"layers\"").expect("layers in manifest");
    let layers = digests_after(&manifest, layers_at);
    assert!(!layers.is_empty(), "no layers in {manifest}");
    layers
        .iter()
        .map(|l| oci.join("blobs/sha256").join(l))
        .collect()
}

/// One entry of a layer tarball.
#[derive(Debug, Clone)]
pub(crate) struct TarEntry {
    /// The path without `./` or a trailing `/`.
    pub(crate) name: String,
    /// `UID:GID`.
    pub(crate) owner: String,
}

/// The entries of a layer tarball, in order.
pub(crate) fn tar_entries(blob: &Path) -> Vec<TarEntry> {
    let mut c = Command::new("tar");
    c.arg("--numeric-owner").arg("-tvf").arg(blob);
    let o = run_cmd(&mut c, CHILD).expect("tar -t");
    assert!(o.success(), "tar -tvf {}: {o:?}", blob.display());
    o.stdout
        .lines()
        .filter_map(|l| {
            // MODE UID/GID SIZE DATE TIME NAME[ -> TARGET | link to TARGET]
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 {
                return None;
            }
            let rest = f[5..].join(" ");
            let name = rest.split(" -> ").next()?.split(" link to ").next()?;
            Some(TarEntry {
                name: name
                    .trim_start_matches("./")
                    .trim_end_matches('/')
                    .to_string(),
                owner: f[1].replace('/', ":"),
            })
        })
        .filter(|e| !e.name.is_empty() && e.name != ".")
        .collect()
}

/// The entries of a layer tarball by name.
pub(crate) fn tar_index(blob: &Path) -> BTreeMap<String, TarEntry> {
    tar_entries(blob)
        .into_iter()
        .map(|e| (e.name.clone(), e))
        .collect()
}

fn remove_path(p: &Path) {
    let _ = if p.is_dir() && !p.is_symlink() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    };
}

/// Apply the image's layers (OCI layout) in order into `out` the way an image puller does:
/// `.wh.NAME` deletes NAME below, `.wh..wh..opq` empties its directory. Returns each layer's
/// entry names, bottom first.
pub(crate) fn apply_oci_layers(oci: &Path, out: &Path) -> Vec<Vec<String>> {
    mkdirs(out);
    let mut listings = Vec::new();
    for blob in oci_layers(oci) {
        let names: Vec<String> = tar_entries(&blob).into_iter().map(|e| e.name).collect();
        for e in &names {
            let (dir, base) = match e.rsplit_once('/') {
                Some((d, b)) => (out.join(d), b),
                None => (out.to_path_buf(), e.as_str()),
            };
            if base == ".wh..wh..opq" {
                for k in fs::read_dir(&dir).into_iter().flatten().flatten() {
                    remove_path(&k.path());
                }
            } else if let Some(name) = base.strip_prefix(".wh.") {
                remove_path(&dir.join(name));
            }
        }
        let mut c = Command::new("tar");
        c.arg("-xf")
            .arg(&blob)
            .arg("-C")
            .arg(out)
            .arg("--exclude=.wh.*")
            .arg("--no-same-owner");
        let o = run_cmd(&mut c, CHILD).expect("tar -x");
        assert!(o.success(), "tar -xf {}: {o:?}", blob.display());
        listings.push(names);
    }
    listings
}
