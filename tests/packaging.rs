//! Shipping: the Debian package that `packaging/build-deb.sh` builds (from the binary under
//! test, to keep CI short; without `--binary` the script builds a release) installs with
//! `dpkg -i`, mounts through the installed `/usr/bin/ovlfs` and through `mount -t
//! fuse.ovlfs` (mount(8) running /sbin/mount.fuse.ovlfs, no PATH search), and goes away with
//! `dpkg -r`, even when the test fails half-way. And the man page renders without warnings.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const DPKG: Duration = Duration::from_secs(120);
const BODY_SECS: u64 = 30;

fn using_default_binary() -> bool {
    std::env::var_os("OVLFS_TEST_BIN").is_none_or(|v| v.is_empty())
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `dpkg -r ovlfs` on drop: the package never outlives the test.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let mut c = Command::new("dpkg");
        c.args(["-r", "ovlfs"]);
        match run_cmd(&mut c, DPKG) {
            Ok(o) if o.success() => {}
            o => visible(&format!("packaging: dpkg -r ovlfs failed: {o:?}")),
        }
    }
}

fn package_installed() -> bool {
    let mut c = Command::new("dpkg-query");
    c.args(["-W", "-f", "${Status}", "ovlfs"]);
    run_cmd(&mut c, DPKG)
        .is_ok_and(|o| o.stdout.contains("installed") && !o.stdout.contains("not-installed"))
}

/// The mount's daemon's argv[0] (to tell which program mount(8) ran).
fn daemon_argv0(mnt: &Path) -> Option<String> {
    let pid = find_daemon_pids(Path::new("/usr/bin/ovlfs"), mnt)
        .into_iter()
        .next()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let first = cmdline.split(|b| *b == 0).next()?;
    Some(String::from_utf8_lossy(first).into_owned())
}

fn check_view(mnt: &Path, upper: &Path, tag: &str) {
    let (m, u, tag) = (mnt.to_path_buf(), upper.to_path_buf(), tag.to_owned());
    with_watchdog(BODY_SECS, mnt, move || {
        assert_eq!(fs::read_to_string(m.join("f")).expect("read f"), "lower\n");
        assert_eq!(sorted_names(&m), vec!["d", "f"]);
        write_file(&m.join(&tag), "written\n");
        assert_eq!(
            fs::read_to_string(u.join(&tag)).expect("upper"),
            "written\n"
        );
        fs::remove_file(m.join(&tag)).expect("rm");
    });
}

#[test]
fn debian_package_installs_mounts_and_removes() {
    let test = "debian_package_installs_mounts_and_removes";
    if !using_default_binary() || !require_root(test) {
        return;
    }
    for tool in ["dpkg-deb", "dpkg", "dpkg-query", "mount", "fusermount3"] {
        if !have(tool) {
            skip_or_fail(test, &format!("{tool} not installed"));
            return;
        }
    }
    if package_installed() {
        skip_or_fail(
            test,
            "a package named ovlfs is installed already: remove it (dpkg -r ovlfs) to run this",
        );
        return;
    }
    let (_t, root) = scratch(&["lower", "upper", "work", "mnt", "deb"]);
    write_file(&root.join("lower/f"), "lower\n");
    write_file(&root.join("lower/d/x"), "x\n");

    // Build.
    let mut build = Command::new("bash");
    build
        .arg(repo().join("packaging/build-deb.sh"))
        .arg("--binary")
        .arg(ovlfs_bin())
        .arg("--out")
        .arg(root.join("deb"));
    let out = run_cmd(&mut build, DPKG).expect("run build-deb.sh");
    assert!(out.success(), "build-deb.sh failed: {out:?}");
    let deb = PathBuf::from(out.stdout.trim());
    assert!(deb.is_file(), "build-deb.sh printed {:?}", out.stdout);
    let mut contents = Command::new("dpkg");
    contents.arg("-c").arg(&deb);
    let listing = run_cmd(&mut contents, DPKG).expect("dpkg -c");
    visible(&format!("dpkg -c {}:\n{}", deb.display(), listing.stdout));
    for path in [
        "./usr/bin/ovlfs",
        "./sbin/mount.fuse.ovlfs -> /usr/bin/ovlfs",
        "./usr/share/man/man8/ovlfs.8.gz",
        "./usr/share/doc/ovlfs/copyright",
        "./usr/share/doc/ovlfs/changelog.gz",
    ] {
        assert!(listing.stdout.contains(path), "the package lacks {path}");
    }
    let mut field = Command::new("dpkg-deb");
    field
        .arg("-f")
        .arg(&deb)
        .args(["Package", "Version", "Architecture", "Depends"]);
    let fields = run_cmd(&mut field, DPKG).expect("dpkg-deb -f").stdout;
    assert!(fields.contains("Package: ovlfs"), "{fields}");
    assert!(
        fields.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "{fields}"
    );
    assert!(fields.contains("Depends: fuse3, libc6"), "{fields}");

    // Install; removed again whatever happens below.
    let _installed = Installed;
    let mut install = Command::new("dpkg");
    install.arg("-i").arg(&deb);
    let out = run_cmd(&mut install, DPKG).expect("dpkg -i");
    assert!(out.success(), "dpkg -i failed: {out:?}");
    let mut version = Command::new("/usr/bin/ovlfs");
    version.arg("--version");
    let v = run_cmd(&mut version, MOUNT_TIMEOUT).expect("/usr/bin/ovlfs --version");
    assert!(
        v.stdout
            .starts_with(&format!("ovlfs: version {}\n", env!("CARGO_PKG_VERSION"))),
        "{v:?}"
    );

    let (mnt, upper) = (root.join("mnt"), root.join("upper"));
    // The installed binary as a daemon.
    {
        let m = Ovlfs::new([root.join("lower")])
            .upper(&upper, root.join("work"))
            .binary("/usr/bin/ovlfs")
            .mount_daemon(&mnt);
        check_view(m.path(), &upper, "by_usr_bin_ovlfs");
        assert!(m.fusermount_u(), "fusermount3 -u");
    }
    // mount -t fuse.ovlfs with an empty environment: mount(8) finds /sbin/mount.fuse.ovlfs.
    {
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            root.join("lower").display(),
            upper.display(),
            root.join("work").display()
        );
        let mut c = Command::new("mount");
        c.env_clear()
            .args(["-t", "fuse.ovlfs", "ovlfs"])
            .arg(&mnt)
            .args(["-o", &opts]);
        let out = run_cmd(&mut c, MOUNT_TIMEOUT).expect("mount -t fuse.ovlfs");
        let _guard = OwnMount(mnt.clone());
        assert!(
            out.success() && is_fuse_mounted(&mnt),
            "mount -t fuse.ovlfs failed: {out:?}"
        );
        assert_eq!(
            daemon_argv0(&mnt).as_deref(),
            Some("/sbin/mount.fuse.ovlfs"),
            "mount(8) should run the package's helper"
        );
        check_view(&mnt, &upper, "by_mount_t_fuse_ovlfs");
        let mut u = Command::new("umount");
        u.arg(&mnt);
        let out = run_cmd_quiesced(&mut u, MOUNT_TIMEOUT).expect("umount");
        assert!(out.success() && !is_fuse_mounted(&mnt), "umount: {out:?}");
        assert!(
            daemons_gone_for(&mnt, EXIT_TIMEOUT),
            "the daemon did not exit after umount"
        );
    }

    drop(_installed);
    assert!(
        !package_installed(),
        "dpkg -r ovlfs left the package installed"
    );
    for gone in ["/usr/bin/ovlfs", "/sbin/mount.fuse.ovlfs"] {
        assert!(
            fs::symlink_metadata(gone).is_err(),
            "{gone} still there after dpkg -r"
        );
    }
}

/// Waits (bounded) for the installed daemon serving `mnt` to exit.
fn daemons_gone_for(mnt: &Path, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while !find_daemon_pids(Path::new("/usr/bin/ovlfs"), mnt).is_empty() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// A mount made by mount(8): unmounted (lazily if need be) on drop, its daemon ended by PID.
struct OwnMount(PathBuf);

impl Drop for OwnMount {
    fn drop(&mut self) {
        if is_fuse_mounted(&self.0) && !run_quiet("umount", &[self.0.as_os_str()]) {
            run_quiet("umount", &["-l".as_ref(), self.0.as_os_str()]);
        }
        for pid in find_daemon_pids(Path::new("/usr/bin/ovlfs"), &self.0) {
            kill_pid(pid, rustix::process::Signal::KILL);
        }
    }
}

/// `groff -man -ww -z` and `man --warnings` find nothing to warn about in ovlfs.8.
#[test]
fn man_page_renders_without_warnings() {
    let test = "man_page_renders_without_warnings";
    let page = repo().join("ovlfs.8");
    if !have("groff") {
        skip_or_fail(test, "groff not installed (Debian package groff-base)");
        return;
    }
    let mut g = Command::new("groff");
    g.args(["-man", "-ww", "-z"]).arg(&page);
    let out = run_cmd(&mut g, MOUNT_TIMEOUT).expect("groff");
    assert!(out.success() && out.stderr.is_empty(), "groff: {out:?}");
    if !have("man") {
        skip_or_fail(test, "man not installed (Debian package man-db)");
        return;
    }
    let mut m = Command::new("man");
    m.env("MANWIDTH", "80")
        .args(["--warnings", "-l"])
        .arg(&page);
    let out = run_cmd(&mut m, MOUNT_TIMEOUT).expect("man");
    assert!(out.success(), "man -l: {out:?}");
    assert!(out.stderr.is_empty(), "man --warnings: {}", out.stderr);
    for heading in [
        "NAME",
        "SYNOPSIS",
        "OPTIONS",
        "EXIT STATUS",
        "SIGNALS",
        "FILES",
        "EXAMPLES",
    ] {
        assert!(
            out.stdout.contains(heading),
            "the rendered page lacks {heading}"
        );
    }
}
