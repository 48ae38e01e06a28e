//! podman end-to-end, with ovlfs as `mount_program` (skipped visibly where podman cannot run).

use super::*;
use std::fs;
use std::thread;
use std::time::Instant;

fn podman_skip(why: &str) {
    // Not fatal under CI either: CI does not install podman.
    visible(&format!(
        "SKIPPED: podman_end_to_end_with_ovlfs_mount_program: {why}"
    ));
}

/// Build a tiny root filesystem from the host's sh and a few coreutils (with their libraries).
fn build_rootfs(root: &Path) -> Result<(), String> {
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "run", "var"] {
        mkdirs(&root.join(d));
    }
    let tools = [
        "sh", "ls", "cat", "mkdir", "rm", "touch", "stat", "echo", "tr",
    ];
    for t in tools {
        let src = ["/bin", "/usr/bin"]
            .iter()
            .map(|d| Path::new(d).join(t))
            .find(|p| p.exists())
            .ok_or_else(|| format!("{t} not found on the host"))?;
        let real = fs::canonicalize(&src).map_err(|e| format!("{}: {e}", src.display()))?;
        fs::copy(&real, root.join("bin").join(t)).map_err(|e| format!("copy {t}: {e}"))?;
        let mut c = Command::new("ldd");
        c.arg(&real);
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

struct Podman {
    base: Vec<String>,
    cwd: PathBuf,
}

impl Podman {
    fn new(state: &Path, driver_args: &[String]) -> Podman {
        let mut base = vec![
            format!("--root={}", state.join("root").display()),
            format!("--runroot={}", state.join("run").display()),
            format!("--tmpdir={}", state.join("tmp").display()),
            "--cgroup-manager=cgroupfs".into(),
            "--events-backend=file".into(),
        ];
        if have("runc") {
            // crun refuses hybrid cgroup hierarchies; runc copes with them.
            base.push("--runtime=runc".into());
        }
        base.extend(driver_args.iter().cloned());
        Podman {
            base,
            cwd: state.to_path_buf(),
        }
    }

    fn run(&self, args: &[&str], timeout: Duration) -> CmdOutput {
        let mut c = Command::new("podman");
        c.args(&self.base)
            .args(args)
            .current_dir(&self.cwd)
            .env("LC_ALL", "C");
        run_cmd(&mut c, timeout).expect("run podman")
    }

    fn ok(&self, args: &[&str], timeout: Duration) -> String {
        let o = self.run(args, timeout);
        assert!(o.success(), "podman {args:?} failed: {o:?}");
        o.stdout
    }
}

const RUN_FLAGS: [&str; 4] = [
    "--network=none",
    "--ulimit=nofile=1024:1024",
    "--ulimit=nproc=1024:1024",
    "--pull=never",
];

/// Tears podman state down and makes sure nothing stays mounted under `root` and no ovlfs
/// daemon serves a mountpoint there.
struct PodmanCleanup {
    pm: Podman,
    root: PathBuf,
}

impl Drop for PodmanCleanup {
    fn drop(&mut self) {
        let _ = self.pm.run(&["rm", "-a", "-f"], Duration::from_secs(60));
        let _ = self.pm.run(&["rmi", "-a", "-f"], Duration::from_secs(60));
        let under: Vec<PathBuf> = mountinfo()
            .into_iter()
            .rev()
            .map(|m| m.mount_point)
            .filter(|p| p.starts_with(&self.root))
            .collect();
        for p in under {
            visible(&format!(
                "podman cleanup: unmounting leftover {}",
                p.display()
            ));
            quiet("umount", &["-l".as_ref(), p.as_os_str()]);
        }
        for pid in ovlfs_daemons_under(&self.root) {
            visible(&format!("podman cleanup: killing leftover ovlfs {pid}"));
            kill_pid(pid, rustix::process::Signal::KILL);
        }
    }
}

/// PIDs of ovlfs processes with an argument under `root`.
fn ovlfs_daemons_under(root: &Path) -> Vec<u32> {
    let bin = fs::canonicalize(ovlfs_bin()).unwrap_or_else(|_| ovlfs_bin());
    let mut v = Vec::new();
    let me = std::process::id();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || !fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|x| x == bin) {
            continue;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let r = root.to_string_lossy();
        if String::from_utf8_lossy(&cmdline).contains(&*r) {
            v.push(pid);
        }
    }
    v
}

/// Apply the image's saved layers (OCI dir) in order, honouring AUFS whiteouts, into `out`.
fn apply_oci_layers(oci: &Path, out: &Path) -> Vec<String> {
    let index = fs::read_to_string(oci.join("index.json")).expect("index.json");
    let digest_after = |text: &str, from: usize| -> Vec<String> {
        let mut v = Vec::new();
        let mut rest = &text[from..];
        while let Some(i) = rest.find("\"digest\":\"sha256:") {
            rest = &rest[i + "\"digest\":\"sha256:".len()..];
            v.push(rest[..64].to_string());
        }
        v
    };
    let manifest_digest = digest_after(&index, 0)
        .into_iter()
        .next()
        .expect("manifest digest in index.json");
    let manifest =
        fs::read_to_string(oci.join("blobs/sha256").join(&manifest_digest)).expect("manifest blob");
    let layers_at = manifest.find("\"layers\"").expect("layers in manifest");
    let layers = digest_after(&manifest, layers_at);
    assert!(!layers.is_empty(), "no layers in {manifest}");
    mkdirs(out);
    let mut listings = Vec::new();
    for l in &layers {
        let blob = oci.join("blobs/sha256").join(l);
        let mut c = Command::new("tar");
        c.arg("-tf").arg(&blob);
        let o = run_cmd(&mut c, CHILD).expect("tar -t");
        assert!(o.success(), "tar -tf {}: {o:?}", blob.display());
        listings.push(o.stdout.clone());
        for entry in o.stdout.lines() {
            let e = entry.trim_start_matches("./").trim_end_matches('/');
            let (dir, base) = match e.rsplit_once('/') {
                Some((d, b)) => (out.join(d), b),
                None => (out.to_path_buf(), e),
            };
            if base == ".wh..wh..opq" {
                for k in fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let p = k.path();
                    let _ = if p.is_dir() && !p.is_symlink() {
                        fs::remove_dir_all(&p)
                    } else {
                        fs::remove_file(&p)
                    };
                }
            } else if let Some(name) = base.strip_prefix(".wh.") {
                let p = dir.join(name);
                let _ = if p.is_dir() && !p.is_symlink() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
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
    }
    listings
}

/// Rootful podman with ovlfs as `mount_program`: import a local base image from a tarball,
/// build an image whose RUN steps delete and recreate lower directories, run containers
/// (`--network=none`), check files, and check the saved layers reproduce the tree.
#[test]
fn podman_end_to_end_with_ovlfs_mount_program() {
    if !have("podman") {
        podman_skip("podman is not installed");
        return;
    }
    if !is_root() {
        podman_skip("needs root (rootful podman)");
        return;
    }
    for t in ["tar", "ldd"] {
        if !have(t) {
            podman_skip(&format!("{t} is not installed"));
            return;
        }
    }
    let (_t, root) = scratch(&["rootfs", "ctx", "vfs", "ovl", "saved_tree"]);
    if let Err(e) = build_rootfs(&root.join("rootfs")) {
        podman_skip(&format!("cannot build a root filesystem: {e}"));
        return;
    }
    let tarball = root.join("base.tar");
    let mut c = Command::new("tar");
    c.arg("-C")
        .arg(root.join("rootfs"))
        .arg("-cf")
        .arg(&tarball)
        .arg(".");
    let o = run_cmd(&mut c, CHILD).expect("tar -c");
    assert!(o.success(), "tar: {o:?}");
    let tarball_s = tarball.to_string_lossy().into_owned();

    // Can podman run containers here at all? Try with the vfs driver (no ovlfs involved).
    let vfs = Podman::new(&root.join("vfs"), &["--storage-driver=vfs".to_string()]);
    let _vfs_cleanup = PodmanCleanup {
        pm: Podman::new(&root.join("vfs"), &["--storage-driver=vfs".to_string()]),
        root: root.clone(),
    };
    let o = vfs.run(
        &["import", &tarball_s, "localhost/ovlfs-e2e-base:1"],
        Duration::from_secs(120),
    );
    if !o.success() {
        podman_skip(&format!(
            "podman import fails even with the vfs driver: {}",
            o.stderr.trim()
        ));
        return;
    }
    let mut args: Vec<&str> = vec!["run", "--rm"];
    args.extend(RUN_FLAGS);
    args.extend(["localhost/ovlfs-e2e-base:1", "sh", "-c", "echo ok"]);
    let o = vfs.run(&args, Duration::from_secs(120));
    if !(o.success() && o.stdout.trim() == "ok") {
        podman_skip(&format!(
            "podman cannot run containers here even with the vfs driver: {}",
            o.stderr.trim()
        ));
        return;
    }

    // The real thing: overlay driver with ovlfs as mount_program.
    let pm = Podman::new(
        &root.join("ovl"),
        &[
            "--storage-driver=overlay".to_string(),
            format!(
                "--storage-opt=overlay.mount_program={}",
                ovlfs_bin().display()
            ),
        ],
    );
    let _cleanup = PodmanCleanup {
        pm: Podman::new(
            &root.join("ovl"),
            &[
                "--storage-driver=overlay".to_string(),
                format!(
                    "--storage-opt=overlay.mount_program={}",
                    ovlfs_bin().display()
                ),
            ],
        ),
        root: root.clone(),
    };
    let long = Duration::from_secs(300);
    let info = pm.ok(&["info", "--format", "{{.Store.GraphOptions}}"], long);
    assert!(
        info.contains("mount_program") && info.contains(&*ovlfs_bin().to_string_lossy()),
        "podman does not use ovlfs as mount_program: {info}"
    );
    pm.ok(&["import", &tarball_s, "localhost/ovlfs-e2e-base:1"], long);

    // RUN steps that delete and recreate lower directories.
    let containerfile = "FROM localhost/ovlfs-e2e-base:1\n\
        RUN mkdir -p /data/sub /keep /nest/a/b && echo a > /data/sub/f && echo b > /data/g \
            && echo old > /data/old && echo k > /keep/k && echo k2 > /keep/k2 && echo deep > /nest/a/b/c\n\
        RUN rm -rf /data && mkdir /data && echo new > /data/n && rm /keep/k \
            && rm -rf /nest/a && mkdir -p /nest/a && echo fresh > /nest/a/fresh \
            && ls -la /data /nest/a >/dev/null && for p in /data/old /data/g /data/sub /nest/a/b; do if stat $p >/dev/null 2>&1; then echo \"STILL THERE: $p\"; exit 1; fi; done\n\
        RUN echo appended >> /keep/k2 && rm -rf /data && mkdir /data && echo newer > /data/m\n";
    write_file(&root.join("ctx/Containerfile"), containerfile);
    let ctx = root.join("ctx").to_string_lossy().into_owned();
    let mut args: Vec<&str> = vec![
        "build",
        "--network=none",
        "--ulimit=nofile=1024:1024",
        "--ulimit=nproc=1024:1024",
        "-t",
        "localhost/ovlfs-e2e:1",
        "-f",
    ];
    let cf = format!("{ctx}/Containerfile");
    args.push(&cf);
    args.push(&ctx);
    let o = pm.run(&args, long);
    assert!(
        o.success(),
        "podman build with ovlfs failed:\n{}\n{}",
        o.stdout,
        o.stderr
    );

    // Run a container: the final tree, and that its root is an ovlfs mount.
    let check = "ls -A /data | tr '\\n' ' '; echo '|'; ls -A /keep | tr '\\n' ' '; echo '|'; \
                 cat /data/m /keep/k2 /nest/a/fresh; ls -A /nest/a | tr '\\n' ' '; echo '|'; \
                 for p in /data/n /data/old /keep/k /nest/a/b; do stat $p >/dev/null 2>&1 && echo \"visible $p\"; done; \
                 cat /proc/self/mountinfo";
    let mut args: Vec<&str> = vec!["run", "--rm"];
    args.extend(RUN_FLAGS);
    args.extend(["localhost/ovlfs-e2e:1", "sh", "-c", check]);
    let out = pm.ok(&args, long);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("m |"), "/data in the container:\n{out}");
    assert_eq!(lines.next(), Some("k2 |"), "/keep in the container:\n{out}");
    assert_eq!(lines.next(), Some("newer"));
    assert_eq!(lines.next(), Some("k2"));
    assert_eq!(lines.next(), Some("appended"));
    assert_eq!(lines.next(), Some("fresh"));
    assert_eq!(
        lines.next(),
        Some("fresh |"),
        "/nest/a in the container:\n{out}"
    );
    assert!(
        !out.contains("visible "),
        "deleted paths visible in the container:\n{out}"
    );
    let root_line = out
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .unwrap_or_else(|| panic!("no / in the container's mountinfo:\n{out}"));
    assert!(
        root_line.contains(" - fuse"),
        "the container's root is not a FUSE (ovlfs) mount: {root_line}"
    );

    // rm -rf / mkdir at container run time, on the image's lower layers.
    let trap = "rm -rf /data /nest && mkdir /data /nest && ls -A /data /nest; \
                for p in /data/m /nest/a /nest/a/fresh; do stat $p >/dev/null 2>&1 && echo \"visible $p\"; done; echo done";
    let mut args: Vec<&str> = vec!["run", "--rm"];
    args.extend(RUN_FLAGS);
    args.extend(["localhost/ovlfs-e2e:1", "sh", "-c", trap]);
    let out = pm.ok(&args, long);
    assert!(
        !out.contains("visible "),
        "rm -rf/mkdir trap in a container:\n{out}"
    );
    assert!(out.contains("done"), "{out}");

    // The saved layers reproduce the same tree.
    let saved = root.join("saved");
    let saved_s = saved.to_string_lossy().into_owned();
    pm.ok(
        &[
            "save",
            "--format",
            "oci-dir",
            "-o",
            &saved_s,
            "localhost/ovlfs-e2e:1",
        ],
        long,
    );
    let tree = root.join("saved_tree");
    let listings = apply_oci_layers(&saved, &tree);
    let got = |rel: &str| names(&tree.join(rel));
    assert_eq!(
        got("data"),
        vec!["m"],
        "/data from the saved layers; layers:\n{listings:#?}"
    );
    assert_eq!(
        got("keep"),
        vec!["k2"],
        "/keep from the saved layers; layers:\n{listings:#?}"
    );
    assert_eq!(
        got("nest/a"),
        vec!["fresh"],
        "/nest/a from the saved layers; layers:\n{listings:#?}"
    );
    assert_eq!(
        fs::read_to_string(tree.join("keep/k2")).expect("keep/k2"),
        "k2\nappended\n"
    );
    assert_eq!(
        fs::read_to_string(tree.join("data/m")).expect("data/m"),
        "newer\n"
    );

    // No ovlfs daemon outlives the containers.
    pm.ok(&["rm", "-a", "-f"], long);
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while !ovlfs_daemons_under(&root).is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let left = ovlfs_daemons_under(&root);
    assert!(
        left.is_empty(),
        "ovlfs daemons still running after the containers ended: {left:?}"
    );
}
