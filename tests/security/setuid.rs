//! setuid/setgid clearing, compared with ext4 and the kernel's overlayfs.

use super::permissions::{USER_A, USER_B, as_user, owner_mode};
use super::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// setuid / setgid clearing, compared with ext4 and the kernel's overlayfs
// ---------------------------------------------------------------------------------------------

/// (name, mode, uid, gid, who acts, shell action with FILE for the path)
const SUID_CASES: &[(&str, u32, u32, u32, u32, &str)] = &[
    ("w_suid", 0o6777, USER_B, USER_B, USER_A, "echo x >> FILE"),
    ("w_owner", 0o6775, USER_A, USER_A, USER_A, "echo x >> FILE"),
    (
        "t_suid",
        0o6777,
        USER_B,
        USER_B,
        USER_A,
        "truncate -s 3 FILE",
    ),
    ("o_suid", 0o6777, USER_B, USER_B, USER_A, ": > FILE"),
    ("c_suid", 0o6755, USER_B, USER_B, 0, "chown 1002 FILE"),
    ("c_sgid", 0o2755, USER_B, USER_B, 0, "chgrp 1003 FILE"),
    (
        "m_sgid_nonmember",
        0o755,
        USER_A,
        USER_B,
        USER_A,
        "chmod 2755 FILE",
    ),
    (
        "m_sgid_member",
        0o755,
        USER_A,
        USER_A,
        USER_A,
        "chmod 2755 FILE",
    ),
    ("r_root_write", 0o6777, USER_B, USER_B, 0, "echo x >> FILE"),
];

/// setgid without group-execute on a file written by a non-member of its group: ext4 and the
/// kernel's overlayfs clear it (Linux ≥ 6.2 rules); FUSE's own kernel-side clearing only drops
/// setgid together with group-execute, so the daemon has to do it.
const SGID_NOGX_CASES: &[(&str, u32, u32, u32, u32, &str)] = &[
    (
        "w_sgid_nogx",
        0o2666,
        USER_B,
        USER_B,
        USER_A,
        "echo x >> FILE",
    ),
    (
        "t_sgid_nogx",
        0o2666,
        USER_B,
        USER_B,
        USER_A,
        "truncate -s 1 FILE",
    ),
];

fn suid_fixture(dir: &Path, prefix: &str, cases: &[(&str, u32, u32, u32, u32, &str)]) {
    for (name, mode, uid, gid, _, _) in cases {
        file_full(
            &dir.join(format!("{prefix}{name}")),
            b"content",
            *mode,
            *uid,
            *gid,
        );
    }
}

/// Runs every case on `root` (files `lo_*` from a lower, `up_*` already in the upper).
fn suid_run(
    root: &Path,
    cases: &[(&str, u32, u32, u32, u32, &str)],
) -> BTreeMap<String, (u32, u32, u32)> {
    let mut out = BTreeMap::new();
    for prefix in ["lo_", "up_"] {
        for (name, _, _, _, who, action) in cases {
            let file = root.join(format!("{prefix}{name}"));
            let script = action.replace("FILE", &file.display().to_string());
            let o = if *who == 0 {
                let mut c = Command::new("sh");
                c.args(["-c", &script]);
                run_cmd(&mut c, Duration::from_secs(30)).expect("sh")
            } else {
                as_user(*who, &script)
            };
            assert!(
                o.success(),
                "`{script}` as uid {who} failed: {}",
                o.stderr.trim()
            );
            out.insert(format!("{prefix}{name}"), owner_mode(&file));
        }
    }
    out
}

fn suid_compare(test: &str, cases: &[(&str, u32, u32, u32, u32, &str)]) {
    const TEST: &str = "setuid_setgid";
    if !require_root(test) {
        return;
    }
    let (_t, s) = scratch(&[
        "plain", "lower", "upper", "work", "mnt", "klower", "kupper", "kwork", "kmnt",
    ]);
    chmod(&s, 0o755);
    // Reference: the host filesystem itself.
    suid_fixture(&s.join("plain"), "lo_", cases);
    suid_fixture(&s.join("plain"), "up_", cases);
    let reference = suid_run(&s.join("plain"), cases);
    // ovlfs.
    suid_fixture(&s.join("lower"), "lo_", cases);
    suid_fixture(&s.join("upper"), "up_", cases);
    let m = Ovlfs::new([s.join("lower")])
        .upper(s.join("upper"), s.join("work"))
        .opt("allow_other")
        .mount(&s.join("mnt"));
    let ovl = suid_run(&s.join("mnt"), cases);
    // Where the operation copied the file up (or it was there), the upper must agree.
    let ovl_upper: BTreeMap<String, (u32, u32, u32)> = ovl
        .keys()
        .filter(|k| s.join("upper").join(k).exists())
        .map(|k| (k.clone(), owner_mode(&s.join("upper").join(k))))
        .collect();
    assert_daemon_healthy(&m, test);
    drop(m);
    // The kernel's overlayfs, when available.
    let kernel = if kernel_overlay_available() {
        suid_fixture(&s.join("klower"), "lo_", cases);
        suid_fixture(&s.join("kupper"), "up_", cases);
        let k = KernelOverlay::mount(
            &[&s.join("klower")],
            Some((&s.join("kupper"), &s.join("kwork"))),
            &[],
            &s.join("kmnt"),
        );
        let r = suid_run(&s.join("kmnt"), cases);
        drop(k);
        Some(r)
    } else {
        visible(&format!(
            "{test}: kernel overlayfs not available: comparing with ext4 only"
        ));
        None
    };
    let mut failures = Vec::new();
    for (k, want) in &reference {
        let got = ovl.get(k).copied();
        if got != Some(*want) {
            failures.push(format!(
                "{k}: ovlfs (uid, gid, mode) {:?} vs ext4 {:?}{}",
                got.map(|(u, g, m)| (u, g, format!("{m:o}"))),
                (want.0, want.1, format!("{:o}", want.2)),
                kernel
                    .as_ref()
                    .and_then(|kr| kr.get(k))
                    .map(|(u, g, m)| format!(" (kernel overlay: {u}, {g}, {m:o})"))
                    .unwrap_or_default()
            ));
        }
        if ovl_upper.get(k).is_some_and(|u| Some(u) != got.as_ref()) {
            failures.push(format!(
                "{k}: the upper holds {:?} but the mount shows {got:?}",
                ovl_upper.get(k)
            ));
        }
        if let Some(kr) = &kernel
            && kr.get(k) != Some(want)
        {
            visible(&format!(
                "{test}: note: kernel overlay differs from ext4 for {k}: {:?} vs {want:?}",
                kr.get(k)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{test} ({TEST}): {} difference(s):\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

#[test]
fn setuid_setgid_cleared_as_on_ext4_and_kernel_overlay() {
    suid_compare(
        "setuid_setgid_cleared_as_on_ext4_and_kernel_overlay",
        SUID_CASES,
    );
}

#[test]
fn setgid_without_group_exec_cleared_for_non_members_as_on_ext4() {
    suid_compare(
        "setgid_without_group_exec_cleared_for_non_members_as_on_ext4",
        SGID_NOGX_CASES,
    );
}
