//! Permissions with `allow_other` and `default_permissions`: enforced, and never widened by copy-up.

use super::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Permissions with allow_other
// ---------------------------------------------------------------------------------------------

pub(crate) const USER_A: u32 = 1000;
pub(crate) const USER_B: u32 = 1001;

/// Runs `script` with `sh -c` as uid/gid `id` without supplementary groups.
pub(crate) fn as_user(id: u32, script: &str) -> CmdOutput {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={id}"))
        .arg(format!("--regid={id}"))
        .arg("--clear-groups")
        .args(["--", "sh", "-c"])
        .arg(format!("umask 022; {script}"));
    run_cmd(&mut c, Duration::from_secs(30)).expect("run setpriv")
}

pub(crate) fn owner_mode(p: &Path) -> (u32, u32, u32) {
    let md = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    (md.uid(), md.gid(), md.mode() & 0o7777)
}

fn perm_fixture(root: &Path) {
    dir_mode(&root.join("home_b"), 0o755);
    chown(&root.join("home_b"), USER_B, USER_B);
    file_full(
        &root.join("home_b/secret_b"),
        b"B's secret",
        0o600,
        USER_B,
        USER_B,
    );
    file_full(
        &root.join("home_b/b_rw"),
        b"B's readable",
        0o644,
        USER_B,
        USER_B,
    );
    dir_mode(&root.join("sticky"), 0o1777);
    file_full(
        &root.join("sticky/b_file"),
        b"B in sticky",
        0o644,
        USER_B,
        USER_B,
    );
    file_full(
        &root.join("sticky/b_shared"),
        b"B shared",
        0o666,
        USER_B,
        USER_B,
    );
    file_full(
        &root.join("sticky/a_file"),
        b"A in sticky",
        0o644,
        USER_A,
        USER_A,
    );
    dir_mode(&root.join("home_a/sub"), 0o750);
    chown(&root.join("home_a/sub"), USER_A, USER_A);
    chmod(&root.join("home_a"), 0o700);
    chown(&root.join("home_a"), USER_A, USER_A);
    file_full(
        &root.join("home_a/sub/a_deep"),
        b"A deep",
        0o600,
        USER_A,
        USER_A,
    );
    fix_times(root, 1_000_000_000);
}

/// (who, script with ROOT for the tree, must succeed)
const PERM_CASES: &[(u32, &str, bool)] = &[
    (USER_A, "cat ROOT/home_b/secret_b", false),
    (USER_A, "echo x >> ROOT/home_b/secret_b", false),
    (USER_A, "chmod 666 ROOT/home_b/secret_b", false),
    (USER_A, "chown 1000 ROOT/home_b/secret_b", false),
    (USER_A, "touch -d @12345 ROOT/home_b/b_rw", false),
    (USER_A, "echo x >> ROOT/home_b/b_rw", false),
    (USER_A, "truncate -s 0 ROOT/home_b/b_rw", false),
    (USER_A, "setfattr -n user.x -v 1 ROOT/home_b/b_rw", false),
    (USER_A, "rm -f ROOT/home_b/b_rw", false),
    (USER_A, "mv ROOT/home_b/b_rw ROOT/sticky/", false),
    (USER_A, "rm -f ROOT/sticky/b_file", false),
    (USER_A, "mv ROOT/sticky/b_file ROOT/sticky/stolen", false),
    (USER_A, "mv ROOT/sticky/a_file ROOT/sticky/b_file", false),
    (USER_B, "cat ROOT/home_a/sub/a_deep", false),
    (USER_B, "ls ROOT/home_a", false),
    (USER_B, "cat ROOT/home_b/secret_b", true),
    (USER_A, "cat ROOT/home_b/b_rw", true),
    (USER_A, "rm ROOT/sticky/a_file", true),
    (USER_A, "echo more >> ROOT/home_a/sub/a_deep", true),
    (USER_A, "echo new > ROOT/home_a/newfile", true),
    (USER_A, "echo shared >> ROOT/sticky/b_shared", true),
];

#[test]
fn permissions_with_allow_other_are_enforced_and_never_widened() {
    const TEST: &str = "permissions_with_allow_other_are_enforced_and_never_widened";
    if !require_root(TEST) {
        return;
    }
    let (_t, s) = scratch(&["lower", "upper", "work", "mnt", "plain"]);
    chmod(&s, 0o755);
    let (lower, upper, plain) = (s.join("lower"), s.join("upper"), s.join("plain"));
    perm_fixture(&lower);
    perm_fixture(&plain);
    let lower_before = snapshot_tree(&lower);
    let mnt = s.join("mnt");
    let m = Ovlfs::new([&lower])
        .upper(&upper, s.join("work"))
        .opt("allow_other")
        .mount(&mnt);
    let mut failures = Vec::new();
    for (who, script, ok) in PERM_CASES {
        let run = |root: &Path| {
            let o = as_user(*who, &script.replace("ROOT", &root.display().to_string()));
            let err = o.stderr.replace(&root.display().to_string(), "ROOT");
            (o.success(), err.trim().to_string())
        };
        let reference = run(&plain);
        let got = run(&mnt);
        assert_eq!(
            reference.0, *ok,
            "test premise: `{script}` as uid {who} on plain ext4 gave {reference:?}"
        );
        if got != reference {
            failures.push(format!(
                "uid {who}: `{script}`: ovlfs {got:?}, plain ext4 {reference:?}"
            ));
        }
    }
    // Denied operations left nothing; copy-ups kept every mode and owner.
    for rel in [
        "home_a",
        "home_a/sub",
        "home_a/sub/a_deep",
        "sticky",
        "sticky/b_shared",
    ] {
        let l = owner_mode(&lower.join(rel));
        let u = fs::symlink_metadata(upper.join(rel)).map(|_| owner_mode(&upper.join(rel)));
        let mg = owner_mode(&mnt.join(rel));
        if u.as_ref().ok() != Some(&l) || mg != l {
            let show = |(u, g, m): (u32, u32, u32)| format!("{u}:{g} {m:o}");
            failures.push(format!(
                "{rel}: copy-up changed owner/mode: lower {}, upper {}, merged {}",
                show(l),
                u.map(show).unwrap_or_else(|e| e.to_string()),
                show(mg)
            ));
        }
    }
    let (newfile, plain_new) = (
        owner_mode(&upper.join("home_a/newfile")),
        owner_mode(&plain.join("home_a/newfile")),
    );
    if newfile != plain_new {
        failures.push(format!(
            "home_a/newfile created by uid {USER_A}: {newfile:?}, on ext4 {plain_new:?}"
        ));
    }
    for rel in ["home_b/secret_b", "home_b/b_rw", "sticky/b_file"] {
        if fs::symlink_metadata(upper.join(rel)).is_ok() {
            failures.push(format!(
                "upper/{rel} exists: a denied operation caused a copy-up or a whiteout"
            ));
        }
        if fs::read(mnt.join(rel)).ok() != fs::read(lower.join(rel)).ok() {
            failures.push(format!("{rel} changed in the merged view"));
        }
    }
    if names(&mnt.join("sticky")) != names(&plain.join("sticky")) {
        failures.push(format!(
            "merged sticky/ holds {:?}, ext4 {:?}",
            names(&mnt.join("sticky")),
            names(&plain.join("sticky"))
        ));
    }
    assert_daemon_healthy(&m, TEST);
    drop(m);
    assert_tree_unchanged("lower", &lower_before, &lower);
    assert!(
        failures.is_empty(),
        "{TEST}: {} failure(s):\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}
