//! Owners as fuse-overlayfs shows them, side by side with fuse-overlayfs itself: id mapping
//! (`uidmapping=`/`gidmapping=` with several `C:H:N` ranges, the stray leading `:`
//! containers/storage sends), squashing, and owners and modes kept in xattrs
//! (`xattr_permissions=1|2`, containers/storage's `force_mask`).
//!
//! Each scenario runs once on ovlfs and once on fuse-overlayfs (from PATH, or
//! `OVLFS_PEER_BIN`) and writes down what it sees as `key = value` lines. ovlfs's lines are
//! checked against the values the option's meaning gives; then the two transcripts must
//! agree, except on the keys listed with the reason fuse-overlayfs is wrong there. Without
//! fuse-overlayfs the comparison is skipped visibly (a failure under CI=true).
//!
//! The daemon runs as root; callers with other ids are simulated with `setpriv`.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BODY_SECS: u64 = 60;
const CHILD: Duration = Duration::from_secs(30);

/// The mapping from fuse-overlayfs's manual: on-disk 0 shows as 1000, 1..=65536 as
/// 110000..=175535.
const MAP: &str = "0:1000:1:1:110000:65536";

/// What one run of a scenario saw.
#[derive(Default, Debug)]
struct Transcript(BTreeMap<String, String>);

impl Transcript {
    fn note(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    fn get(&self, key: &str) -> &str {
        self.0
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no observation {key:?} in {:#?}", self.0))
    }

    /// Asserts every `(key, value)` of `want`.
    fn expect(&self, scenario: &str, want: &[(&str, &str)]) {
        let wrong: Vec<String> = want
            .iter()
            .filter(|(k, v)| self.get(k) != *v)
            .map(|(k, v)| format!("{k}: want {v:?}, got {:?}", self.get(k)))
            .collect();
        assert!(
            wrong.is_empty(),
            "{scenario} on {}:\n{}",
            ovlfs_bin().display(),
            wrong.join("\n")
        );
    }
}

/// The program ovlfs is compared with.
fn peer_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("OVLFS_PEER_BIN").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("fuse-overlayfs"))
            .find(|p| p.is_file())
    })
}

fn owner_of(p: &Path) -> String {
    match fs::symlink_metadata(p) {
        Ok(md) => format!("{}:{}", md.uid(), md.gid()),
        Err(e) => format!("error {}", errno_short(&e)),
    }
}

fn mode_of(p: &Path) -> String {
    match fs::symlink_metadata(p) {
        Ok(md) => format!("{:o}", md.mode() & 0o7777),
        Err(e) => format!("error {}", errno_short(&e)),
    }
}

/// `EINVAL` and the like, short enough to compare and to read in a table.
fn errno_short(e: &std::io::Error) -> String {
    let names = [
        (libc::EINVAL, "EINVAL"),
        (libc::EPERM, "EPERM"),
        (libc::EACCES, "EACCES"),
        (libc::ENOENT, "ENOENT"),
        (libc::ENODATA, "ENODATA"),
        (libc::EOPNOTSUPP, "EOPNOTSUPP"),
        (libc::EBADF, "EBADF"),
    ];
    let code = e.raw_os_error().unwrap_or(0);
    names
        .iter()
        .find(|(c, _)| *c == code)
        .map_or_else(|| format!("errno {code}"), |(_, n)| n.to_string())
}

fn outcome<T>(r: std::io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("error {}", errno_short(&e)),
    }
}

/// `sh -c script` as uid/gid `id` (bounded); "ok" or the failure.
fn sh_as(id: u32, script: &str) -> String {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={id}"))
        .arg(format!("--regid={id}"))
        .arg("--clear-groups")
        .args(["sh", "-c", script])
        .env("LC_ALL", "C");
    let o = run_cmd(&mut c, CHILD).expect("run setpriv");
    if !o.success() {
        "failed".into()
    } else if o.stdout.trim().is_empty() {
        "ok".into()
    } else {
        format!("ok {}", o.stdout.trim())
    }
}

fn lchown(p: &Path, uid: Option<u32>, gid: Option<u32>) -> String {
    outcome(std::os::unix::fs::lchown(p, uid, gid))
}

fn chmod_to(p: &Path, mode: u32) -> String {
    outcome(fs::set_permissions(p, fs::Permissions::from_mode(mode)))
}

/// Layers of one run: `lower`, `upper`, `work`, `mnt` under a scratch root.
struct Layers {
    _t: tempfile::TempDir,
    root: PathBuf,
}

impl Layers {
    fn new() -> Layers {
        let (t, root) = scratch(&["lower", "upper", "work", "mnt"]);
        chmod(&root, 0o755);
        Layers { _t: t, root }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

type Scenario = fn(&Path, &Path, &mut Transcript);

/// Builds the layers with `setup`, mounts them with `bin` (`None`: ovlfs) and `opts`, runs
/// `body(mnt, upper, transcript)` under a watchdog, unmounts.
fn run_with(bin: Option<&Path>, setup: fn(&Path), opts: &[String], body: Scenario) -> Transcript {
    let layers = Layers::new();
    setup(&layers.p("lower"));
    let mut o = Ovlfs::new([layers.p("lower")]).upper(layers.p("upper"), layers.p("work"));
    if let Some(b) = bin {
        o = o.binary(b);
    }
    for opt in opts {
        o = o.opt(opt);
    }
    let m = o.mount(&layers.p("mnt"));
    let mnt = m.path().to_path_buf();
    let upper = layers.p("upper");
    let t = with_watchdog(BODY_SECS, m.path(), move || {
        let mut t = Transcript::default();
        body(&mnt, &upper, &mut t);
        t
    });
    drop(m);
    t
}

/// Runs a scenario on ovlfs, checks `want`, then compares with fuse-overlayfs. `known`:
/// keys where fuse-overlayfs is wrong, with the reason (they must differ, or the note is
/// stale).
fn side_by_side(
    name: &str,
    setup: fn(&Path),
    opts: &[String],
    body: Scenario,
    want: &[(&str, &str)],
    known: &[(&str, &str)],
) {
    if !require_root(name) {
        return;
    }
    let ours = run_with(None, setup, opts, body);
    ours.expect(name, want);
    let Some(peer) = peer_bin() else {
        let msg = format!("SKIPPED (comparison): {name}: fuse-overlayfs not installed");
        assert!(!in_ci(), "{msg} (CI=true: failing instead of skipping)");
        visible(&msg);
        return;
    };
    let theirs = run_with(Some(&peer), setup, opts, body);
    let mut differ = Vec::new();
    let mut table = Vec::new();
    for (key, value) in &ours.0 {
        let other = theirs.0.get(key).map(String::as_str).unwrap_or("(none)");
        match known.iter().find(|(k, _)| k == key) {
            Some((_, why)) => {
                table.push(format!(
                    "  {key}: fuse-overlayfs {other:?}, ovlfs {value:?} ({why})"
                ));
                assert_ne!(
                    other, value,
                    "{name}: {key} is listed as a known difference but both show {value:?}"
                );
            }
            None if other != value => differ.push(format!(
                "  {key}: fuse-overlayfs {other:?}, ovlfs {value:?}"
            )),
            None => {}
        }
    }
    if !table.is_empty() {
        visible(&format!(
            "{name}: known differences from fuse-overlayfs:\n{}",
            table.join("\n")
        ));
    }
    assert!(
        differ.is_empty(),
        "{name}: ovlfs and {} disagree:\n{}",
        peer.display(),
        differ.join("\n")
    );
}

fn opts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Id mapping
// ---------------------------------------------------------------------------------------------

/// Lower files owned by on-disk ids 0, 1, 1000 (0600) and 70000 (outside the map); a 1777
/// `shared` directory; the lower root owned by 0.
fn mapped_lower(l: &Path) {
    file_full(&l.join("own0"), "zero\n", 0o644, 0, 0);
    file_full(&l.join("own1"), "one\n", 0o644, 1, 1);
    file_full(&l.join("own1000"), "thousand\n", 0o600, 1000, 1000);
    file_full(&l.join("own70000"), "far\n", 0o644, 70_000, 70_000);
    dir_mode(&l.join("shared"), 0o1777);
}

fn mapped_body(mnt: &Path, upper: &Path, t: &mut Transcript) {
    for n in ["", "own0", "own1", "own1000", "own70000", "shared"] {
        t.note(format!("view /{n}"), owner_of(&mnt.join(n)));
    }
    // Shown 110999 is on-disk 1000: it reads its 0600 file, 110998 (on-disk 999) cannot.
    let m = mnt.display();
    t.note(
        "read own1000 as 110999",
        sh_as(110_999, &format!("cat {m}/own1000")),
    );
    t.note(
        "read own1000 as 110998",
        sh_as(110_998, &format!("cat {m}/own1000")),
    );
    // Created by shown 110005 ⇒ on-disk 6.
    t.note(
        "create as 110005",
        sh_as(
            110_005,
            &format!("echo x > {m}/shared/by6 && mkdir {m}/shared/dir6"),
        ),
    );
    for n in ["shared/by6", "shared/dir6"] {
        t.note(format!("view /{n}"), owner_of(&mnt.join(n)));
        t.note(format!("disk {n}"), owner_of(&upper.join(n)));
    }
    // chown through the mount: shown 110005 ⇒ on-disk 6; a lower file is copied up first.
    t.note(
        "chown own0 110005:110005",
        lchown(&mnt.join("own0"), Some(110_005), Some(110_005)),
    );
    t.note(
        "chown own1 1000:",
        lchown(&mnt.join("own1"), Some(1000), None),
    );
    t.note(
        "chown own1 :110002",
        lchown(&mnt.join("own1"), None, Some(110_002)),
    );
    for n in ["own0", "own1"] {
        t.note(format!("view /{n} after chown"), owner_of(&mnt.join(n)));
        t.note(format!("disk {n}"), owner_of(&upper.join(n)));
    }
    // An id no range covers.
    t.note(
        "chown own0 to unmapped 5",
        lchown(&mnt.join("own0"), Some(5), None),
    );
    t.note(
        "disk own0 after unmapped chown",
        owner_of(&upper.join("own0")),
    );
    // A copy-up keeps the on-disk owner, also one outside the map.
    t.note("chmod own70000", chmod_to(&mnt.join("own70000"), 0o640));
    t.note("disk own70000", owner_of(&upper.join("own70000")));
    t.note(
        "view /own70000 after chmod",
        owner_of(&mnt.join("own70000")),
    );
    // Created by root, which is not a shown id here: the overflow id on disk.
    t.note(
        "create as 0",
        outcome(fs::write(mnt.join("by_root"), "r\n")),
    );
    t.note("disk by_root", owner_of(&upper.join("by_root")));
}

const MAPPED_WANT: &[(&str, &str)] = &[
    ("view /", "1000:1000"),
    ("view /own0", "1000:1000"),
    ("view /own1", "110000:110000"),
    ("view /own1000", "110999:110999"),
    ("view /own70000", "65534:65534"),
    ("read own1000 as 110999", "ok thousand"),
    ("read own1000 as 110998", "failed"),
    ("create as 110005", "ok"),
    ("view /shared/by6", "110005:110005"),
    ("disk shared/by6", "6:6"),
    ("disk shared/dir6", "6:6"),
    ("chown own0 110005:110005", "ok"),
    ("view /own0 after chown", "110005:110005"),
    ("disk own0", "6:6"),
    ("chown own1 1000:", "ok"),
    ("chown own1 :110002", "ok"),
    ("view /own1 after chown", "1000:110002"),
    ("disk own1", "0:3"),
    ("chown own0 to unmapped 5", "error EINVAL"),
    ("disk own0 after unmapped chown", "6:6"),
    ("chmod own70000", "ok"),
    ("disk own70000", "70000:70000"),
    ("view /own70000 after chmod", "65534:65534"),
    ("create as 0", "ok"),
    ("disk by_root", "65534:65534"),
];

/// fuse-overlayfs stores the overflow id for an owner no range covers: the file silently
/// gets another owner. ovlfs refuses the chown, as a filesystem that cannot store an owner
/// must.
const UNMAPPED_CHOWN: &[(&str, &str)] = &[
    (
        "chown own0 to unmapped 5",
        "fuse-overlayfs stores the overflow id instead",
    ),
    (
        "disk own0 after unmapped chown",
        "fuse-overlayfs replaced the owner with the overflow id",
    ),
];

/// Several ranges, both directions: the view, permission checks, creation, chown, copy-up.
#[test]
fn several_ranges_map_as_fuse_overlayfs() {
    side_by_side(
        "several_ranges_map_as_fuse_overlayfs",
        mapped_lower,
        &[format!("uidmapping={MAP}"), format!("gidmapping={MAP}")],
        mapped_body,
        MAPPED_WANT,
        UNMAPPED_CHOWN,
    );
}

/// containers/storage sends the mapping with a stray leading `:`.
#[test]
fn leading_colon_form() {
    side_by_side(
        "leading_colon_form",
        mapped_lower,
        &[format!("uidmapping=:{MAP}"), format!("gidmapping=:{MAP}")],
        mapped_body,
        MAPPED_WANT,
        UNMAPPED_CHOWN,
    );
}

/// uid and gid maps are independent; an id type without a map is the identity.
#[test]
fn uid_and_gid_maps_are_independent() {
    fn body(mnt: &Path, upper: &Path, t: &mut Transcript) {
        t.note("view /own1000", owner_of(&mnt.join("own1000")));
        t.note("view /own70000", owner_of(&mnt.join("own70000")));
        t.note("create", outcome(fs::write(mnt.join("created"), "c\n")));
        t.note("disk created", owner_of(&upper.join("created")));
        t.note(
            "chown 42:200008",
            lchown(&mnt.join("created"), Some(42), Some(200_008)),
        );
        t.note("disk created after chown", owner_of(&upper.join("created")));
        t.note("view created after chown", owner_of(&mnt.join("created")));
    }
    side_by_side(
        "uid_and_gid_maps_are_independent",
        mapped_lower,
        &opts(&["gidmapping=0:0:1:1000:200000:10"]),
        body,
        &[
            ("view /own1000", "1000:200000"),
            ("view /own70000", "70000:65534"),
            ("create", "ok"),
            ("disk created", "0:0"),
            ("chown 42:200008", "ok"),
            ("disk created after chown", "42:1008"),
            ("view created after chown", "42:200008"),
        ],
        &[],
    );
}

fn squash_body(mnt: &Path, upper: &Path, t: &mut Transcript) {
    for n in ["", "own0", "own1", "own1000", "own70000", "shared"] {
        t.note(format!("view /{n}"), owner_of(&mnt.join(n)));
    }
    t.note("create", outcome(fs::write(mnt.join("created"), "c\n")));
    t.note("view /created", owner_of(&mnt.join("created")));
    t.note("disk created", owner_of(&upper.join("created")));
}

#[test]
fn squash_to_root() {
    side_by_side(
        "squash_to_root",
        mapped_lower,
        &opts(&["squash_to_root"]),
        squash_body,
        &[
            ("view /", "0:0"),
            ("view /own1", "0:0"),
            ("view /own1000", "0:0"),
            ("view /own70000", "0:0"),
            ("view /shared", "0:0"),
            ("create", "ok"),
            ("view /created", "0:0"),
            ("disk created", "0:0"),
        ],
        &[],
    );
}

#[test]
fn squash_to_uid_and_gid_over_a_map() {
    side_by_side(
        "squash_to_uid_and_gid_over_a_map",
        mapped_lower,
        &[
            "squash_to_uid=123".into(),
            "squash_to_gid=456".into(),
            format!("uidmapping={MAP}"),
        ],
        squash_body,
        &[
            ("view /", "123:456"),
            ("view /own1000", "123:456"),
            ("view /own70000", "123:456"),
            ("create", "ok"),
            ("view /created", "123:456"),
            // Root is not a shown id of the uid map: overflow; gids are not mapped.
            ("disk created", "65534:0"),
        ],
        &[],
    );
}

/// A malformed mapping is refused with one clear line before anything is mounted.
#[test]
fn malformed_mapping_is_refused() {
    let layers = Layers::new();
    let o = Ovlfs::new([layers.p("lower")]).upper(layers.p("upper"), layers.p("work"));
    for bad in [
        "uidmapping=0:1000",
        "uidmapping=0:1000:1:5",
        "gidmapping=a:b:c",
        "uidmapping=0:1000:0",
    ] {
        let mut c = o.clone().opt(bad).command(&layers.p("mnt"), true);
        let out = run_cmd(&mut c, CHILD).expect("run ovlfs");
        let mounted = is_fuse_mounted(&layers.p("mnt"));
        if mounted {
            let mut u = Command::new("fusermount3");
            u.arg("-u").arg(layers.p("mnt"));
            let _ = run_cmd(&mut u, CHILD);
        }
        assert!(
            out.status.is_some_and(|s| !s.success()) && !mounted,
            "-o {bad} must be refused: {out:?}"
        );
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "-o {bad}: one line, got {:?}", out.stderr);
        assert!(lines[0].contains("mapping"), "-o {bad}: {:?}", lines[0]);
    }
}

// ---------------------------------------------------------------------------------------------
// Owners and modes in xattrs
// ---------------------------------------------------------------------------------------------

const CONTAINERS: &str = "user.containers.override_stat";
const PRIVILEGED: &str = "security.fuseoverlayfs.override_stat";

/// A lower as containers/storage writes it with `force_mask=700`: every real mode is 0700
/// and the real owner and mode are in `user.containers.override_stat`, announced on the
/// root. `g` is setuid; `plain` has no xattr (its real owner and mode stand).
fn masked_lower(l: &Path) {
    fs::create_dir(l.join("d")).unwrap();
    write_file(&l.join("f"), "hi\n");
    write_file(&l.join("g"), "#!/bin/sh\n");
    write_file(&l.join("plain"), "p\n");
    for n in ["", "d", "f", "g", "plain"] {
        chmod(&l.join(n), 0o700);
    }
    set_xattr(l, CONTAINERS, b"0:0:0755");
    set_xattr(&l.join("d"), CONTAINERS, b"0:0:0755");
    set_xattr(&l.join("f"), CONTAINERS, b"1000:1000:0644");
    set_xattr(&l.join("g"), CONTAINERS, b"0:0:04755:file");
}

fn stat_line(p: &Path) -> String {
    format!("{} {}", owner_of(p), mode_of(p))
}

fn xattr_body(mnt: &Path, upper: &Path, t: &mut Transcript) {
    for n in ["", "d", "f", "g", "plain"] {
        t.note(format!("view /{n}"), stat_line(&mnt.join(n)));
    }
    t.note("create new", outcome(fs::write(mnt.join("new"), "n\n")));
    t.note("chmod new 640", chmod_to(&mnt.join("new"), 0o640));
    t.note("mkdir nd", outcome(fs::create_dir(mnt.join("nd"))));
    t.note("chmod nd 2750", chmod_to(&mnt.join("nd"), 0o2750));
    t.note("chmod f 600 (copy-up)", chmod_to(&mnt.join("f"), 0o600));
    t.note(
        "chown d 5:6 (copy-up)",
        lchown(&mnt.join("d"), Some(5), Some(6)),
    );
    t.note("append to g (copy-up)", {
        let f = fs::OpenOptions::new().append(true).open(mnt.join("g"));
        outcome(f.and_then(|mut f| std::io::Write::write_all(&mut f, b"echo\n")))
    });
    for n in ["d", "f", "g", "new", "nd"] {
        t.note(format!("view /{n} after"), stat_line(&mnt.join(n)));
    }
    // The real owner and mode in the upper are not what users see.
    t.note("disk mode f", mode_of(&upper.join("f")));
    t.note("disk mode new", mode_of(&upper.join("new")));
    // The xattr is bookkeeping: not listed, not readable through the mount.
    let listed = list_xattrs(&mnt.join("f")).unwrap_or_default();
    t.note(
        "override xattr listed",
        listed
            .iter()
            .any(|n| n.contains("override_stat"))
            .to_string(),
    );
    t.note(
        "getxattr override through the mount",
        outcome(get_xattr(&mnt.join("f"), CONTAINERS)),
    );
}

const XATTR_VIEW: &[(&str, &str)] = &[
    ("view /", "0:0 755"),
    ("view /d", "0:0 755"),
    ("view /f", "1000:1000 644"),
    ("view /g", "0:0 4755"),
    ("view /plain", "0:0 700"),
    ("create new", "ok"),
    ("chmod new 640", "ok"),
    ("view /new after", "0:0 640"),
    ("view /nd after", "0:0 2750"),
    ("view /f after", "1000:1000 600"),
    ("view /d after", "5:6 755"),
    ("view /g after", "0:0 4755"),
    ("override xattr listed", "false"),
    ("getxattr override through the mount", "error ENODATA"),
];

/// Where fuse-overlayfs 1.10 is wrong with `xattr_permissions=2` over such a lower.
const XATTR_KNOWN: &[(&str, &str)] = &[
    (
        "view /plain",
        "fuse-overlayfs 1.10 fails stat with ENODATA on a file of such a layer without the xattr",
    ),
    (
        "view /f after",
        "fuse-overlayfs 1.10 writes the upper xattr from the file's real owner after a copy-up: \
         the chmod also changed the owner",
    ),
    (
        "override xattr listed",
        "fuse-overlayfs lists its bookkeeping xattr",
    ),
    (
        "getxattr override through the mount",
        "fuse-overlayfs shows its bookkeeping xattr",
    ),
    (
        "disk mode f",
        "ovlfs keeps real modes at 0700 (owner only), fuse-overlayfs opens them to 0755",
    ),
    (
        "disk mode new",
        "ovlfs keeps real modes at 0700 (owner only), fuse-overlayfs opens them to 0755",
    ),
];

/// `xattr_permissions=2` (what containers/storage passes with `force_mask`).
#[test]
fn xattr_permissions_2_as_fuse_overlayfs() {
    let mut want = XATTR_VIEW.to_vec();
    want.extend([("disk mode f", "700"), ("disk mode new", "700")]);
    side_by_side(
        "xattr_permissions_2_as_fuse_overlayfs",
        masked_lower,
        &opts(&["xattr_permissions=2"]),
        xattr_body,
        &want,
        XATTR_KNOWN,
    );
}

/// `xattr_permissions=1`: the upper keeps owners and modes in the privileged xattr.
#[test]
fn xattr_permissions_1_as_fuse_overlayfs() {
    let mut want = XATTR_VIEW.to_vec();
    want.extend([("disk mode f", "700"), ("disk mode new", "700")]);
    side_by_side(
        "xattr_permissions_1_as_fuse_overlayfs",
        masked_lower,
        &opts(&["xattr_permissions=1"]),
        xattr_body,
        &want,
        XATTR_KNOWN,
    );
}

/// What lands on disk: the upper's xattr names, its root marker, and an upper that
/// fuse-overlayfs 1.10 wrote (`user.fuseoverlayfs.override_stat`) keeps its name.
#[test]
fn xattr_permissions_on_disk() {
    if !require_root("xattr_permissions_on_disk") {
        return;
    }
    for (option, name) in [
        ("xattr_permissions=2", CONTAINERS),
        ("xattr_permissions=1", PRIVILEGED),
    ] {
        let layers = Layers::new();
        masked_lower(&layers.p("lower"));
        let m = Ovlfs::new([layers.p("lower")])
            .upper(layers.p("upper"), layers.p("work"))
            .opt(option)
            .mount(&layers.p("mnt"));
        fs::write(m.join("new"), "n\n").unwrap();
        // chown clears setuid: chmod last.
        std::os::unix::fs::lchown(m.join("new"), Some(7), Some(8)).unwrap();
        fs::set_permissions(m.join("new"), fs::Permissions::from_mode(0o4711)).unwrap();
        drop(m);
        let up = layers.p("upper");
        assert_eq!(
            get_xattr(&up.join("new"), name).unwrap(),
            b"7:8:04711",
            "{option}"
        );
        assert_eq!(owner_of(&up.join("new")), "0:0", "{option}: real owner");
        // The root marker, from the lower root's stored value.
        assert_eq!(get_xattr(&up, name).unwrap(), b"0:0:0755", "{option}: root");
        // Mounted again without the option, the upper still shows what it stores.
        let m = Ovlfs::new([layers.p("lower")])
            .upper(layers.p("upper"), layers.p("work"))
            .mount(&layers.p("mnt"));
        assert_eq!(stat_line(&m.join("new")), "7:8 4711", "{option}: remount");
    }

    // An upper written by fuse-overlayfs 1.10 with `=2`.
    let layers = Layers::new();
    masked_lower(&layers.p("lower"));
    let up = layers.p("upper");
    set_xattr(&up, "user.fuseoverlayfs.override_stat", b"0:0:40755");
    write_file(&up.join("old"), "o\n");
    chmod(&up.join("old"), 0o755);
    set_xattr(
        &up.join("old"),
        "user.fuseoverlayfs.override_stat",
        b"3:4:100640",
    );
    let m = Ovlfs::new([layers.p("lower")])
        .upper(layers.p("upper"), layers.p("work"))
        .opt("xattr_permissions=2")
        .mount(&layers.p("mnt"));
    assert_eq!(stat_line(&m.join("old")), "3:4 640");
    fs::write(m.join("new"), "n\n").unwrap();
    fs::set_permissions(m.join("new"), fs::Permissions::from_mode(0o640)).unwrap();
    drop(m);
    assert_eq!(
        get_xattr(&up.join("new"), "user.fuseoverlayfs.override_stat").unwrap(),
        b"0:0:0640"
    );
    assert!(get_xattr(&up.join("new"), CONTAINERS).is_err());
}
