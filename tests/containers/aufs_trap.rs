//! AUFS whiteouts in image layers, and the rm -rf / mkdir trap.

use super::*;
use std::fs;

// ---------------------------------------------------------------------------------------------
// AUFS whiteouts in image layers
// ---------------------------------------------------------------------------------------------

/// containers/storage extracts image layers for mount programs with AUFS whiteouts: `.wh.NAME`
/// hides NAME below, `.wh..wh..opq` hides everything below in that directory; neither shows.
#[test]
fn aufs_whiteouts_in_image_layers_hide_lower_entries() {
    if !require_root("aufs_whiteouts_in_image_layers_hide_lower_entries") {
        return;
    }
    // Layer 0 is the top. 2 = base image, 1 = a layer deleting things, 0 = adds on top.
    let st = Storage::new(3, |i, d| match i {
        2 => {
            write_file(&d.join("a"), "a\n");
            write_file(&d.join("b"), "b\n");
            write_file(&d.join("dir/x"), "x\n");
            write_file(&d.join("dir/y"), "y\n");
            write_file(&d.join("dir2/z"), "z\n");
            write_file(&d.join("dir2/keep"), "keep\n");
            write_file(&d.join("sub/deep/file"), "deep\n");
        }
        1 => {
            whiteout_aufs(d, "a");
            opaque(&d.join("dir"), Opaque::WhOpq);
            write_file(&d.join("dir/mid"), "mid\n");
            whiteout_aufs(&d.join("dir2"), "z");
            whiteout_aufs(d, "sub");
        }
        _ => {
            write_file(&d.join("dir/top"), "top\n");
            write_file(&d.join("sub/fresh"), "fresh\n");
        }
    });
    let opts = format!("{},{}", st.lowerdir(), st.upper_work());
    let m = storage_launch(&st.home(), &opts, &st.merged()).ok("AUFS layers");
    let mnt = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        assert_eq!(names(&mnt), vec!["b", "dir", "dir2", "sub"]);
        assert_eq!(names(&mnt.join("dir")), vec!["mid", "top"]);
        assert_eq!(names(&mnt.join("dir2")), vec!["keep"]);
        // `sub` was deleted in layer 1 and recreated in layer 0: only the new content.
        assert_eq!(names(&mnt.join("sub")), vec!["fresh"]);
        for hidden in [
            "a",
            "dir/x",
            "dir/y",
            "dir2/z",
            "sub/deep",
            ".wh.a",
            "dir/.wh..wh..opq",
            "dir2/.wh.z",
        ] {
            assert_eq!(
                errno(&fs::symlink_metadata(mnt.join(hidden))),
                Some(libc::ENOENT),
                "/{hidden} must not be visible"
            );
        }
        // A hidden name can be created again through the mount.
        write_file(&mnt.join("a"), "again\n");
        assert_eq!(fs::read_to_string(mnt.join("a")).expect("a"), "again\n");
        fs::create_dir(mnt.join("dir2/z")).expect("mkdir dir2/z over an AUFS whiteout");
        assert!(names(&mnt.join("dir2/z")).is_empty());
    });
    m.fusermount_u();
}

// ---------------------------------------------------------------------------------------------
// The rm -rf / mkdir trap
// ---------------------------------------------------------------------------------------------

fn sh(script: &str) -> CmdOutput {
    let mut c = Command::new("sh");
    c.args(["-c", script]).env("LC_ALL", "C");
    run_cmd(&mut c, CHILD).expect("run sh")
}

/// What must hold in `D` after `rm -rf D && mkdir D` (and the files created in it since).
fn check_trap(mnt: &Path, created: &[&str]) {
    let d = mnt.join("D");
    let mut want: Vec<String> = created.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names(&d), want, "readdir of the recreated D");
    for gone in ["a", "b", "sub", "sub/c"] {
        if created.contains(&gone) {
            continue;
        }
        assert_eq!(
            errno(&fs::symlink_metadata(d.join(gone))),
            Some(libc::ENOENT),
            "stat D/{gone} after rm -rf D && mkdir D && readdir D"
        );
        assert_eq!(
            errno(&fs::File::open(d.join(gone))),
            Some(libc::ENOENT),
            "open D/{gone}"
        );
    }
    // And from a fresh process (what a build step would do next).
    let o = sh(&format!(
        "cd '{}' && ls -la D >/dev/null && for n in a b sub sub/c; do stat D/$n >/dev/null 2>&1 && echo \"visible $n\"; done; true",
        mnt.display()
    ));
    let visible_names: Vec<&str> = o
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("visible "))
        .filter(|n| !created.contains(n))
        .collect();
    assert!(
        visible_names.is_empty(),
        "names of the old lower D visible again from a new process: {visible_names:?}"
    );
}

/// After `rm -rf D && mkdir D` through the mount and a readdir of D, a name that used to be in
/// the lower D must be ENOENT (fuse-overlayfs gets this wrong, and podman's layer then misses
/// the whiteout) — also after a remount, and after re-creating one of the old names.
#[test]
fn rm_rf_mkdir_trap() {
    if !require_root("rm_rf_mkdir_trap") {
        return;
    }
    let st = Storage::new(2, |i, d| {
        if i == 1 {
            write_file(&d.join("D/a"), "a\n");
            write_file(&d.join("D/sub/c"), "c\n");
        } else {
            write_file(&d.join("D/b"), "b\n");
        }
    });
    let opts = format!("{},{}", st.lowerdir(), st.upper_work());
    let m = storage_launch(&st.home(), &opts, &st.merged()).ok("trap mount");
    let mnt = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        // Look everything up first, so the kernel has the old names cached.
        assert_eq!(names(&mnt.join("D")), vec!["a", "b", "sub"]);
        assert!(fs::metadata(mnt.join("D/sub/c")).is_ok());
        let o = sh(&format!("cd '{}' && rm -rf D && mkdir D", mnt.display()));
        assert!(o.success(), "rm -rf D && mkdir D: {o:?}");
        check_trap(&mnt, &[]);
        write_file(&mnt.join("D/new"), "new\n");
        check_trap(&mnt, &["new"]);
        // One old name recreated: the new file, not the lower one.
        write_file(&mnt.join("D/a"), "fresh a\n");
        assert_eq!(
            fs::read_to_string(mnt.join("D/a")).expect("D/a"),
            "fresh a\n"
        );
        check_trap(&mnt, &["a", "new"]);
    });
    m.fusermount_u();
    let opq = get_xattr(&st.p("ctr/diff/D"), "trusted.overlay.opaque")
        .or_else(|_| get_xattr(&st.p("ctr/diff/D"), "user.overlay.opaque"));
    assert_eq!(
        opq.ok().as_deref(),
        Some(&b"y"[..]),
        "upper D must be opaque"
    );

    let m = storage_launch(&st.home(), &opts, &st.merged()).ok("trap remount");
    let mnt = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        check_trap(&mnt, &["a", "new"]);
        assert_eq!(
            fs::read_to_string(mnt.join("D/a")).expect("D/a"),
            "fresh a\n"
        );
    });
    m.fusermount_u();
}

/// The same trap with every step a separate short-lived process, as a RUN line does it.
#[test]
fn rm_rf_mkdir_trap_separate_processes() {
    if !require_root("rm_rf_mkdir_trap_separate_processes") {
        return;
    }
    let st = Storage::new(1, |_, d| {
        for n in 0..50 {
            write_file(&d.join(format!("D/f{n}")), "x\n");
        }
        write_file(&d.join("D/sub/c"), "c\n");
    });
    let opts = format!("{},{}", st.lowerdir(), st.upper_work());
    let m = storage_launch(&st.home(), &opts, &st.merged()).ok("trap mount");
    let mnt = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        let q = mnt.display();
        let o = sh(&format!(
            "ls -la '{q}/D' >/dev/null; rm -rf '{q}/D' && mkdir '{q}/D' && ls '{q}/D'; \
             for n in f0 f49 sub sub/c; do stat '{q}/D'/$n >/dev/null 2>&1 && echo \"visible $n\"; done; \
             echo done"
        ));
        assert!(o.success(), "{o:?}");
        assert_eq!(
            o.stdout, "done\n",
            "old names visible after rm -rf/mkdir: {o:?}"
        );
    });
    m.fusermount_u();
}
