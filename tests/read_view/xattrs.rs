//! Focused tests (ovlfs only): overlay-private xattrs never show.

use super::*;

const PRIVATE: [&str; 5] = [
    "trusted.overlay.opaque",
    "trusted.overlay.foo",
    "user.overlay.bar",
    "user.overlay.opaque",
    "user.fuseoverlayfs.baz",
];

/// Overlay-private xattrs never appear in listxattr and getxattr gives ENODATA, in both
/// namespace modes, on files and dirs of the upper and of lowers; ordinary user.* ones do.
#[test]
fn private_xattrs_hidden() {
    if !require_root("private_xattrs_hidden") {
        return;
    }
    let mut all_fails = Vec::new();
    for mode in ["trusted", "userxattr"] {
        let (_t, root) = scratch(&["u", "w", "l1", "l2", "m"]);
        let (u, l1, l2) = (root.join("u"), root.join("l1"), root.join("l2"));
        let objs = [
            u.join("uf"),
            u.join("ud"),
            l1.join("lf"),
            l1.join("ld"),
            l2.join("l2f"),
        ];
        for (i, o) in objs.iter().enumerate() {
            if o.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with('d'))
            {
                mkdirs(o);
                // Keep the directories non-opaque (opaque=x) so both lowers stay merged.
                set_xattr(o, "trusted.overlay.opaque", b"x");
                set_xattr(o, "user.overlay.opaque", b"x");
            } else {
                write_file(o, format!("object {i}"));
                set_xattr(o, "trusted.overlay.opaque", b"y");
                set_xattr(o, "user.overlay.opaque", b"y");
            }
            set_xattr(o, "trusted.overlay.foo", b"1");
            set_xattr(o, "user.overlay.bar", b"2");
            set_xattr(o, "user.fuseoverlayfs.baz", b"3");
            set_xattr(o, "user.visible", b"ok");
        }
        set_xattr(&u, "trusted.overlay.foo", b"root");
        set_xattr(&u, "user.overlay.bar", b"root");
        set_xattr(&u, "user.visible", b"ok");
        let mut ov = Ovlfs::new([&l1, &l2]).upper(&u, root.join("w"));
        if mode == "userxattr" {
            ov = ov.opt("userxattr");
        }
        let m = ov.mount(&root.join("m"));
        let p = m.path().to_path_buf();
        let fails = with_watchdog(BODY_SECS, m.path(), move || {
            let mut fails = Vec::new();
            for rel in ["", "uf", "ud", "lf", "ld", "l2f"] {
                let path = p.join(rel);
                let shown = if rel.is_empty() { "/" } else { rel };
                match list_xattrs(&path) {
                    Ok(list) => {
                        for n in &list {
                            if n.starts_with("trusted.overlay.")
                                || n.starts_with("user.overlay.")
                                || n.starts_with("user.fuseoverlayfs.")
                            {
                                fails.push(format!("[{mode}] {shown}: listxattr shows {n}"));
                            }
                        }
                        if !list.iter().any(|n| n == "user.visible") {
                            fails.push(format!(
                                "[{mode}] {shown}: listxattr lacks user.visible: {list:?}"
                            ));
                        }
                    }
                    Err(e) => fails.push(format!("[{mode}] {shown}: listxattr: {e}")),
                }
                for name in PRIVATE {
                    let r = get_xattr(&path, name);
                    if errno(&r) != Some(libc::ENODATA) {
                        fails.push(format!(
                            "[{mode}] {shown}: getxattr {name} gives {:?} (want ENODATA)",
                            r.map(|v| String::from_utf8_lossy(&v).into_owned())
                        ));
                    }
                }
                let r = get_xattr(&path, "user.never-set");
                if errno(&r) != Some(libc::ENODATA) {
                    fails.push(format!(
                        "[{mode}] {shown}: getxattr of a missing ordinary name gives {:?}",
                        r.map(|v| String::from_utf8_lossy(&v).into_owned())
                    ));
                }
                match get_xattr(&path, "user.visible") {
                    Ok(v) if v == b"ok" => {}
                    other => fails.push(format!("[{mode}] {shown}: user.visible = {other:?}")),
                }
            }
            fails
        });
        all_fails.extend(fails);
        drop(m);
    }
    assert!(
        all_fails.is_empty(),
        "private xattrs leaked ({} problem(s)):\n  {}",
        all_fails.len(),
        all_fails.join("\n  ")
    );
}
