//! ID mapping as fuse-overlayfs does it (issue 4, DESIGN.md §2): `uidmapping=`/`gidmapping=`
//! with several `ContainerID:HostID:Size` ranges (and the stray leading `:` containers/storage
//! sends), `squash_to_root`, `squash_to_uid=`, `squash_to_gid=`. Owners on disk are host ids;
//! the merged view shows container ids (65534 outside every range); objects created through
//! the mount get the mapped host owner; chown through the mount maps container → host and
//! refuses ids that map nowhere with EINVAL.
//!
//! The daemon runs as root; callers with other container ids are simulated with `setpriv`.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BODY_SECS: u64 = 60;
const CHILD: Duration = Duration::from_secs(30);

/// Two ranges: container 0 ↔ host 1000, container 1..=65536 ↔ host 100000..=165535.
const MAP: &str = "0:1000:1:1:100000:65536";
/// A container id that maps nowhere.
const UNMAPPED: u32 = 70_000;

struct Fixture {
    _t: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    /// Lower files owned by host ids 1000, 100000, 100005 (mode 0600) and 5; a 1777 `shared`
    /// directory; lower and upper roots owned by host 1000 (the container's root).
    fn new() -> Fixture {
        let (t, root) = scratch(&["lower", "upper", "work", "mnt"]);
        chmod(&root, 0o755);
        let l = root.join("lower");
        file_full(&l.join("own1000"), "zero\n", 0o644, 1000, 1000);
        file_full(&l.join("own100000"), "one\n", 0o644, 100_000, 100_000);
        file_full(&l.join("own100005"), "six\n", 0o600, 100_005, 100_005);
        file_full(&l.join("own5"), "unmapped\n", 0o644, 5, 5);
        dir_mode(&l.join("shared"), 0o1777);
        chown(&l.join("shared"), 1000, 1000);
        chown(&l, 1000, 1000);
        chown(&root.join("upper"), 1000, 1000);
        Fixture { _t: t, root }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn ovlfs(&self) -> Ovlfs {
        Ovlfs::new([self.p("lower")]).upper(self.p("upper"), self.p("work"))
    }
}

fn owner(p: &Path) -> (u32, u32) {
    let md = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    (md.uid(), md.gid())
}

/// Run `sh -c script` as container uid/gid `id` (bounded).
fn sh_as(id: u32, script: &str) -> CmdOutput {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={id}"))
        .arg(format!("--regid={id}"))
        .arg("--clear-groups")
        .args(["sh", "-c", script])
        .env("LC_ALL", "C");
    run_cmd(&mut c, CHILD).expect("run setpriv")
}

fn have_setpriv() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("setpriv").is_file()))
}

/// Owners seen through a mount mapped with MAP (either spelling).
fn check_mapped_view(mnt: &Path) {
    for (name, want) in [
        ("", (0, 0)),
        ("own1000", (0, 0)),
        ("own100000", (1, 1)),
        ("own100005", (6, 6)),
        ("own5", (65534, 65534)),
        ("shared", (0, 0)),
    ] {
        assert_eq!(
            owner(&mnt.join(name)),
            want,
            "owner of /{name} seen through the mount"
        );
    }
}

/// Several ranges: the view, creation by container root, chown both ways, copy-up keeping the
/// host owner, EINVAL for unmappable ids, permission checks against container ids, creation by
/// a container user.
#[test]
fn several_ranges_map_owners_both_ways() {
    if !require_root("several_ranges_map_owners_both_ways") {
        return;
    }
    let fx = Fixture::new();
    let m = fx
        .ovlfs()
        .opt(&format!("uidmapping={MAP}"))
        .opt(&format!("gidmapping={MAP}"))
        .mount(&fx.p("mnt"));
    let mnt = m.path().to_path_buf();
    let up = fx.p("upper");
    let lower = fx.p("lower");
    with_watchdog(BODY_SECS, m.path(), move || {
        check_mapped_view(&mnt);

        // Created by container root (the test runs as uid 0) ⇒ host 1000 on disk.
        write_file(&mnt.join("new_root"), "r\n");
        fs::create_dir(mnt.join("newdir")).expect("mkdir newdir");
        std::os::unix::fs::symlink("new_root", mnt.join("newlink")).expect("symlink");
        for n in ["new_root", "newdir", "newlink"] {
            assert_eq!(owner(&up.join(n)), (1000, 1000), "upper/{n} on disk");
            assert_eq!(owner(&mnt.join(n)), (0, 0), "/{n} through the mount");
        }

        // chown through the mount: container 6 ⇒ host 100005.
        std::os::unix::fs::lchown(mnt.join("new_root"), Some(6), Some(6)).expect("chown 6:6");
        assert_eq!(owner(&up.join("new_root")), (100_005, 100_005));
        assert_eq!(owner(&mnt.join("new_root")), (6, 6));
        // A lower file: copy-up, then the mapped owner.
        std::os::unix::fs::lchown(mnt.join("own1000"), Some(1), Some(1)).expect("chown 1:1");
        assert_eq!(owner(&up.join("own1000")), (100_000, 100_000));
        assert_eq!(owner(&mnt.join("own1000")), (1, 1));
        assert_eq!(
            owner(&lower.join("own1000")),
            (1000, 1000),
            "lower untouched"
        );
        // Only the uid or only the gid.
        std::os::unix::fs::lchown(mnt.join("newdir"), Some(2), None).expect("chown 2:");
        assert_eq!(owner(&up.join("newdir")), (100_001, 1000));
        std::os::unix::fs::lchown(mnt.join("newdir"), None, Some(3)).expect("chown :3");
        assert_eq!(owner(&up.join("newdir")), (100_001, 100_002));

        // Ids that map nowhere: EINVAL, nothing changed.
        let r = std::os::unix::fs::lchown(mnt.join("new_root"), Some(UNMAPPED), None);
        assert_eq!(
            errno(&r),
            Some(libc::EINVAL),
            "chown to unmapped uid {UNMAPPED}"
        );
        let r = std::os::unix::fs::lchown(mnt.join("new_root"), None, Some(UNMAPPED));
        assert_eq!(
            errno(&r),
            Some(libc::EINVAL),
            "chown to unmapped gid {UNMAPPED}"
        );
        assert_eq!(owner(&up.join("new_root")), (100_005, 100_005));
        let r = std::os::unix::fs::lchown(mnt.join("own100000"), Some(UNMAPPED), None);
        assert_eq!(
            errno(&r),
            Some(libc::EINVAL),
            "chown of a lower file to {UNMAPPED}"
        );

        // Copy-up by a write keeps the host owner (no remapping of what is on disk).
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(mnt.join("own100005"))
            .expect("open own100005 for append");
        std::io::Write::write_all(&mut f, b"more\n").expect("append");
        drop(f);
        assert_eq!(owner(&up.join("own100005")), (100_005, 100_005));
        assert_eq!(owner(&mnt.join("own100005")), (6, 6));
        // A chmod copy-up of an unmapped-owner file keeps host 5 too.
        fs::set_permissions(mnt.join("own5"), fs::Permissions::from_mode(0o640)).expect("chmod");
        assert_eq!(owner(&up.join("own5")), (5, 5));
        assert_eq!(owner(&mnt.join("own5")), (65534, 65534));
    });
    if !have_setpriv() {
        visible("SKIPPED (part): several_ranges_map_owners_both_ways: setpriv not installed");
        return;
    }
    let mnt = m.path().to_path_buf();
    let up = fx.p("upper");
    with_watchdog(BODY_SECS, m.path(), move || {
        let mq = mnt.display();
        // Permission checks use container ids: 6 owns own100005 (0600), 7 does not.
        let o = sh_as(6, &format!("cat '{mq}/own100005'"));
        assert!(o.success(), "uid 6 reading its 0600 file: {o:?}");
        assert_eq!(o.stdout, "six\nmore\n");
        let o = sh_as(7, &format!("cat '{mq}/own100005'"));
        assert!(!o.success(), "uid 7 must not read uid 6's 0600 file: {o:?}");
        // Created by container uid 6 ⇒ host 100005.
        let o = sh_as(
            6,
            &format!("echo x > '{mq}/shared/by6' && mkdir '{mq}/shared/dir6'"),
        );
        assert!(o.success(), "uid 6 creating in shared/: {o:?}");
        assert_eq!(owner(&up.join("shared/by6")), (100_005, 100_005));
        assert_eq!(owner(&up.join("shared/dir6")), (100_005, 100_005));
        assert_eq!(owner(&mnt.join("shared/by6")), (6, 6));
        // A caller whose id maps nowhere cannot create anything (it would get a wrong owner).
        let o = sh_as(UNMAPPED, &format!("echo x > '{mq}/shared/by_unmapped'"));
        assert!(
            !o.success(),
            "a caller with unmapped uid {UNMAPPED} created a file: {o:?}"
        );
        assert!(
            fs::symlink_metadata(up.join("shared/by_unmapped")).is_err(),
            "upper/shared/by_unmapped exists (owner {:?})",
            owner(&up.join("shared/by_unmapped"))
        );
    });
    drop(m);
}

/// containers/storage sends the mapping with a stray leading `:`.
#[test]
fn leading_colon_form() {
    if !require_root("leading_colon_form") {
        return;
    }
    let fx = Fixture::new();
    let m = fx
        .ovlfs()
        .opt(&format!("uidmapping=:{MAP}"))
        .opt(&format!("gidmapping=:{MAP}"))
        .mount(&fx.p("mnt"));
    let mnt = m.path().to_path_buf();
    let up = fx.p("upper");
    with_watchdog(BODY_SECS, m.path(), move || {
        check_mapped_view(&mnt);
        write_file(&mnt.join("created"), "c\n");
        assert_eq!(owner(&up.join("created")), (1000, 1000));
        std::os::unix::fs::lchown(mnt.join("created"), Some(6), Some(6)).expect("chown 6:6");
        assert_eq!(owner(&up.join("created")), (100_005, 100_005));
    });
}

/// uid and gid maps are independent; an id type without a map is the identity.
#[test]
fn uid_and_gid_maps_are_independent() {
    if !require_root("uid_and_gid_maps_are_independent") {
        return;
    }
    let fx = Fixture::new();
    file_full(&fx.p("lower/mixed"), "m\n", 0o644, 1000, 200_003);
    let m = fx
        .ovlfs()
        .opt("gidmapping=0:1000:1:1:200000:10")
        .mount(&fx.p("mnt"));
    let mnt = m.path().to_path_buf();
    let up = fx.p("upper");
    with_watchdog(BODY_SECS, m.path(), move || {
        // uids: identity; gids: mapped.
        assert_eq!(owner(&mnt.join("mixed")), (1000, 4));
        assert_eq!(owner(&mnt.join("own100005")), (100_005, 65534));
        write_file(&mnt.join("created"), "c\n");
        assert_eq!(owner(&up.join("created")), (0, 1000));
        std::os::unix::fs::lchown(mnt.join("created"), Some(42), Some(9)).expect("chown 42:9");
        assert_eq!(owner(&up.join("created")), (42, 200_008));
        let r = std::os::unix::fs::lchown(mnt.join("created"), None, Some(11));
        assert_eq!(
            errno(&r),
            Some(libc::EINVAL),
            "gid 11 is outside the gid map"
        );
    });
}

/// squash_to_root: every owner shows as 0:0.
#[test]
fn squash_to_root() {
    if !require_root("squash_to_root") {
        return;
    }
    let fx = Fixture::new();
    let m = fx.ovlfs().opt("squash_to_root").mount(&fx.p("mnt"));
    let mnt = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        for n in ["", "own1000", "own100000", "own100005", "own5", "shared"] {
            assert_eq!(owner(&mnt.join(n)), (0, 0), "/{n} with squash_to_root");
        }
        write_file(&mnt.join("created"), "c\n");
        assert_eq!(owner(&mnt.join("created")), (0, 0));
    });
}

/// squash_to_uid= / squash_to_gid=: every owner shows as the given ids, also with a map.
#[test]
fn squash_to_uid_and_gid() {
    if !require_root("squash_to_uid_and_gid") {
        return;
    }
    let fx = Fixture::new();
    let m = fx
        .ovlfs()
        .opt("squash_to_uid=123")
        .opt("squash_to_gid=456")
        .mount(&fx.p("mnt"));
    let mnt = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        for n in ["", "own1000", "own100000", "own100005", "own5", "shared"] {
            assert_eq!(
                owner(&mnt.join(n)),
                (123, 456),
                "/{n} with squash_to_uid/gid"
            );
        }
        write_file(&mnt.join("created"), "c\n");
        assert_eq!(owner(&mnt.join("created")), (123, 456));
    });
    drop(m);

    // Only the gid squashed; uids still go through the map.
    let fx = Fixture::new();
    let m = fx
        .ovlfs()
        .opt(&format!("uidmapping={MAP}"))
        .opt("squash_to_gid=7")
        .mount(&fx.p("mnt"));
    let mnt = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        assert_eq!(owner(&mnt.join("own100005")), (6, 7));
        assert_eq!(owner(&mnt.join("own5")), (65534, 7));
    });
}

/// A malformed mapping is refused with one clear line before anything is mounted.
#[test]
fn malformed_mapping_is_refused() {
    let fx = Fixture::new();
    for bad in [
        "uidmapping=0:1000",
        "uidmapping=0:1000:1:5",
        "gidmapping=a:b:c",
        "uidmapping=0:1000:0",
    ] {
        let mut c = fx.ovlfs().opt(bad).command(&fx.p("mnt"), true);
        let o = run_cmd(&mut c, CHILD).expect("run ovlfs");
        let mounted = is_fuse_mounted(&fx.p("mnt"));
        if mounted {
            let mut u = Command::new("fusermount3");
            u.arg("-u").arg(fx.p("mnt"));
            let _ = run_cmd(&mut u, CHILD);
        }
        assert!(
            o.status.is_some_and(|s| !s.success()) && !mounted,
            "-o {bad} must be refused: {o:?}"
        );
        let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "-o {bad}: one line on stderr, got {:?}",
            o.stderr
        );
        assert!(
            lines[0].contains("mapping"),
            "-o {bad}: the message should name the option: {:?}",
            lines[0]
        );
    }
}
