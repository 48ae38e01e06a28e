//! Differential tests: ovlfs and the kernel's overlayfs must show the same tree over the
//! fixture, in both xattr namespaces, with and without an upper layer.

use super::fixture::{build_lowers, build_upper, hidden_paths};
use super::*;

fn differential(test: &str, ns: Ns, with_upper: bool) {
    if !require_kernel_overlay(test) {
        return;
    }
    let (_t, root) = scratch(&["m_ovl", "m_kern", "w_ovl", "w_kern"]);
    let lowers = build_lowers(&root, ns);
    let lower_refs: Vec<&Path> = lowers.iter().map(|p| p.as_path()).collect();
    let (u_ovl, u_kern) = (root.join("u_ovl"), root.join("u_kern"));
    let mut ov = Ovlfs::new(&lowers);
    let mut kopts = Vec::new();
    if ns == Ns::User {
        ov = ov.opt("userxattr");
        kopts.push("userxattr");
    }
    if with_upper {
        build_upper(&u_ovl, ns);
        build_upper(&u_kern, ns);
        ov = ov.upper(&u_ovl, root.join("w_ovl"));
    }
    let w_kern = root.join("w_kern");
    let kern = KernelOverlay::mount(
        &lower_refs,
        with_upper.then_some((u_kern.as_path(), w_kern.as_path())),
        &kopts,
        &root.join("m_kern"),
    );
    let ovl = ov.mount(&root.join("m_ovl"));
    let (pk, po) = (kern.path().to_path_buf(), ovl.path().to_path_buf());
    let hidden = hidden_paths(with_upper);
    with_watchdog(BODY_SECS, ovl.path(), move || {
        let k = snapshot_tree(&pk);
        // Fixture sanity: the kernel must show what this test believes it shows.
        assert!(
            k.entries.len() > 50,
            "kernel view suspiciously small: {:?}",
            k.entries.keys()
        );
        let mut kernel_errno = Vec::new();
        for h in &hidden {
            let e = lstat_errno(&pk.join(h));
            assert!(
                matches!(e, Some(libc::ENOENT) | Some(libc::ENOTDIR)),
                "fixture assumption: the kernel hides {h}, but lstat gives {}",
                errno_name(e)
            );
            kernel_errno.push(e);
        }
        let o = snapshot_tree(&po);
        let mut diffs = diff_trees("ovlfs", &o, "kernel", &k);
        for (h, ek) in hidden.iter().zip(kernel_errno) {
            let eo = lstat_errno(&po.join(h));
            if eo != ek {
                diffs.push(format!(
                    "lstat {h}: ovlfs gives {} but the kernel gives {}",
                    errno_name(eo),
                    errno_name(ek)
                ));
            }
        }
        if !diffs.is_empty() {
            panic!(
                "ovlfs and the kernel's overlayfs disagree ({} difference(s)):\n  {}",
                diffs.len(),
                diffs.join("\n  ")
            );
        }
    });
    drop(ovl);
    drop(kern);
}

#[test]
fn differential_lowers_only_trusted() {
    differential("differential_lowers_only_trusted", Ns::Trusted, false);
}

#[test]
fn differential_with_upper_trusted() {
    differential("differential_with_upper_trusted", Ns::Trusted, true);
}

#[test]
fn differential_lowers_only_userxattr() {
    differential("differential_lowers_only_userxattr", Ns::User, false);
}

#[test]
fn differential_with_upper_userxattr() {
    differential("differential_with_upper_userxattr", Ns::User, true);
}

/// Names longer than 255 bytes (FUSE passes up to 1024): stat, open, create, mkdir and utimes
/// give ENAMETOOLONG through both mounts, not ENOENT.
#[test]
fn over_long_names_like_the_kernel() {
    if !require_kernel_overlay("over_long_names_like_the_kernel") {
        return;
    }
    let (_t, root) = scratch(&["l", "u_ovl", "u_kern", "w_ovl", "w_kern", "m_ovl", "m_kern"]);
    write_file(&root.join("l/f"), "f\n");
    let kern = KernelOverlay::mount(
        &[&root.join("l")],
        Some((&root.join("u_kern"), &root.join("w_kern"))),
        &[],
        &root.join("m_kern"),
    );
    let ovl = Ovlfs::new([root.join("l")])
        .upper(root.join("u_ovl"), root.join("w_ovl"))
        .mount(&root.join("m_ovl"));
    let (pk, po) = (kern.path().to_path_buf(), ovl.path().to_path_buf());
    with_watchdog(BODY_SECS, ovl.path(), move || {
        let errnos = |m: &Path| -> Vec<(usize, &'static str, Option<i32>)> {
            let mut out = Vec::new();
            for len in [255usize, 256, 300, 1024] {
                let p = m.join("n".repeat(len));
                out.push((len, "stat", lstat_errno(&p)));
                out.push((len, "open", errno(&fs::File::open(&p))));
                out.push((len, "mkdir", errno(&fs::create_dir(&p))));
                let _ = fs::remove_dir(&p);
                out.push((len, "create", errno(&fs::write(&p, "x"))));
                let _ = fs::remove_file(&p);
                let t = std::time::SystemTime::UNIX_EPOCH;
                let utimes = fs::File::options()
                    .write(true)
                    .open(&p)
                    .and_then(|f| f.set_modified(t));
                out.push((len, "utimes", errno(&utimes)));
            }
            out
        };
        let (k, o) = (errnos(&pk), errnos(&po));
        assert!(
            k.iter()
                .any(|(len, _, e)| *len > 255 && *e == Some(libc::ENAMETOOLONG)),
            "fixture assumption: the kernel gives ENAMETOOLONG: {k:?}"
        );
        assert_eq!(o, k, "ovlfs (left) and the kernel (right) differ");
    });
    drop(ovl);
    drop(kern);
}
