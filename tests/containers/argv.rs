//! `--version` and the exact argv shapes of a `mount_program` (daemon mode from the storage
//! directory as cwd, symlinked lowers, trailing empty fields, mapping options, read-only).

use super::*;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

// ---------------------------------------------------------------------------------------------
// --version
// ---------------------------------------------------------------------------------------------

/// podman info runs `MOUNT_PROGRAM --version` and shows its whole output. One line names the
/// program and its version as fuse-overlayfs's does (`fuse-overlayfs: version 1.10`, after
/// libfuse's `fusermount3 version:` line); ovlfs prints it first, then details (commit, FUSE
/// protocol, features), one per line.
#[test]
fn version_names_program_and_version() {
    let ours = std::env::var_os("OVLFS_TEST_BIN").is_none_or(|v| v.is_empty());
    for flag in ["--version", "-V"] {
        let mut c = Command::new(ovlfs_bin());
        c.arg(flag);
        let o = run_cmd(&mut c, CHILD).expect("run ovlfs --version");
        assert!(o.success(), "ovlfs {flag}: {o:?}");
        let lines: Vec<&str> = o.stdout.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.contains(": version "))
            .unwrap_or_else(|| panic!("{flag}: no \"NAME: version X\" line in {:?}", o.stdout));
        let (name, version) = lines[at].split_once(": version ").expect("found above");
        assert!(!name.is_empty() && !name.contains(' '), "{:?}", lines[at]);
        assert!(
            !version.is_empty() && !version.contains(' '),
            "{:?}",
            lines[at]
        );
        if ours {
            assert_eq!(
                at, 0,
                "{flag}: the version line comes first: {:?}",
                o.stdout
            );
            assert_eq!(name, "ovlfs");
            assert_eq!(version, env!("CARGO_PKG_VERSION"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The exact argv shapes
// ---------------------------------------------------------------------------------------------

const LAYERS: usize = 250;
const HOST_ROOT: u32 = 100_000;

/// Layer i holds `fNNN`, `dir/fNNN` and a `shared` file saying which layer it comes from;
/// everything owned by the container's root as stored (on-disk 0), which the mapping shows
/// as host 100000.
fn fill_layer(i: usize, diff: &Path) {
    write_file(&diff.join(format!("f{i:03}")), format!("file {i}\n"));
    write_file(
        &diff.join(format!("dir/f{i:03}")),
        format!("dir file {i}\n"),
    );
    write_file(&diff.join("shared"), format!("layer {i}\n"));
}

/// 250 symlinked lowers, trailing empty fields (`…/work,,volatile`, and a trailing `,`), a
/// quoted context with commas, mapping options with the stray leading `:`, daemon mode from
/// the storage directory as cwd.
#[test]
fn storage_argv_250_symlinked_lowers() {
    if !require_root("storage_argv_250_symlinked_lowers") {
        return;
    }
    let st = Storage::new(LAYERS, fill_layer);
    let opts = format!(
        "{},{},,volatile,context=\"system_u:object_r:container_file_t:s0:c1,c2\",\
         uidmapping=:0:{HOST_ROOT}:65536,gidmapping=:0:{HOST_ROOT}:65536,",
        st.lowerdir(),
        st.upper_work()
    );
    assert!(
        opts.len() > 7000,
        "the option string should be long ({})",
        opts.len()
    );
    let m = storage_launch(&st.home(), &opts, &st.merged()).ok("containers/storage argv");
    let mnt = m.path().to_path_buf();
    let upper = st.p("ctr/diff");
    with_watchdog(BODY_SECS, m.path(), move || {
        let top = names(&mnt);
        assert_eq!(top.len(), LAYERS + 2, "root entries: {top:?}");
        for i in [0, 1, 99, 200, LAYERS - 1] {
            assert_eq!(
                fs::read_to_string(mnt.join(format!("f{i:03}"))).expect("read fNNN"),
                format!("file {i}\n")
            );
        }
        assert_eq!(names(&mnt.join("dir")).len(), LAYERS, "merged dir/");
        // The leftmost lower is the top.
        assert_eq!(
            fs::read_to_string(mnt.join("shared")).expect("shared"),
            "layer 0\n"
        );
        let md = fs::metadata(mnt.join("f123")).expect("stat f123");
        assert_eq!(
            (md.uid(), md.gid()),
            (HOST_ROOT, HOST_ROOT),
            "on-disk root shows as host 100000"
        );
        // A file made by host 100000 (the container's root) is stored as on-disk 0.
        write_file(&mnt.join("created"), "new\n");
        std::os::unix::fs::lchown(mnt.join("created"), Some(HOST_ROOT), Some(HOST_ROOT))
            .expect("chown to host 100000");
        let md = fs::metadata(upper.join("created")).expect("upper/created");
        assert_eq!((md.uid(), md.gid()), (0, 0));
        fs::remove_file(mnt.join("f007")).expect("rm f007");
        assert_eq!(errno(&fs::metadata(mnt.join("f007"))), Some(libc::ENOENT));
    });
    m.fusermount_u();
    let wh = fs::symlink_metadata(st.p("ctr/diff/f007")).expect("whiteout of f007");
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "0/0 whiteout"
    );
}

/// `lowerdir=…,upperdir=…,workdir=…,` — the trailing empty field right after workdir.
#[test]
fn storage_argv_trailing_comma_after_workdir() {
    if !require_root("storage_argv_trailing_comma_after_workdir") {
        return;
    }
    let st = Storage::new(3, |i, d| write_file(&d.join(format!("f{i}")), "x\n"));
    let opts = format!("{},{},", st.lowerdir(), st.upper_work());
    let m = storage_launch(&st.home(), &opts, &st.merged()).ok("trailing comma");
    let mnt = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        assert_eq!(names(&mnt), vec!["f0", "f1", "f2"]);
        write_file(&mnt.join("w"), "w\n");
    });
    m.fusermount_u();
    assert_eq!(
        fs::read_to_string(st.p("ctr/diff/w")).expect("upper/w"),
        "w\n"
    );
}

/// Read-only mounts arrive as `lowerdir=A:B` without an upper.
#[test]
fn storage_argv_read_only_two_lowers() {
    if !require_root("storage_argv_read_only_two_lowers") {
        return;
    }
    let st = Storage::new(2, |i, d| {
        write_file(&d.join(format!("only{i}")), format!("{i}\n"));
        write_file(&d.join("both"), format!("layer {i}\n"));
    });
    let opts = st.lowerdir();
    let m = storage_launch(&st.home(), &opts, &st.merged()).ok("read-only lowerdir=A:B");
    let mnt = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        assert_eq!(names(&mnt), vec!["both", "only0", "only1"]);
        assert_eq!(
            fs::read_to_string(mnt.join("both")).expect("both"),
            "layer 0\n"
        );
        assert_eq!(
            errno(&fs::write(mnt.join("new"), "x")),
            Some(libc::EROFS),
            "creating in a read-only mount"
        );
        assert_eq!(
            errno(&fs::OpenOptions::new().append(true).open(mnt.join("both"))),
            Some(libc::EROFS)
        );
        assert_eq!(
            errno(&fs::remove_file(mnt.join("only1"))),
            Some(libc::EROFS)
        );
    });
    m.fusermount_u();
}
