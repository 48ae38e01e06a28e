//! Focused tests (ovlfs only): inode numbers and readdir (`d_ino`, `.`/`..`, large merged
//! directories, stability across remounts).

use super::fixture::{build_lowers, build_upper};
use super::*;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// st_dev is one value, st_ino unique (hard links share), stable, equal to readdir's d_ino;
/// `.`/`..` are listed, `.` has the directory's inode; names are listed once; dir nlink ≥ 1.
#[test]
fn inode_numbers_consistent() {
    if !require_root("inode_numbers_consistent") {
        return;
    }
    let (_t, root) = scratch(&["m"]);
    let lowers = build_lowers(&root, Ns::Trusted);
    let m = Ovlfs::new(&lowers).mount(&root.join("m"));
    let p = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        let mut fails = Vec::new();
        let tree = readdir_tree(&p);
        let stat_all = || -> BTreeMap<PathBuf, (u64, u64, bool, u64)> {
            let mut out = BTreeMap::new();
            for (dir, ents) in &tree {
                for e in ents {
                    if e.name == "." || e.name == ".." {
                        continue;
                    }
                    let rel = dir.join(&e.name);
                    match fs::symlink_metadata(p.join(&rel)) {
                        Ok(md) => {
                            out.insert(rel, (md.dev(), md.ino(), md.is_dir(), md.nlink()));
                        }
                        Err(err) => panic!("lstat {}: {err}", rel.display()),
                    }
                }
            }
            let md = fs::symlink_metadata(&p).expect("lstat root");
            out.insert(PathBuf::new(), (md.dev(), md.ino(), true, md.nlink()));
            out
        };
        let first = stat_all();
        let second = stat_all();
        let root_dev = first[&PathBuf::new()].0;
        let mut by_ino: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
        for (rel, (dev, ino, is_dir, nlink)) in &first {
            if *dev != root_dev {
                fails.push(format!(
                    "{}: st_dev {dev:#x} != root's {root_dev:#x}",
                    rel.display()
                ));
            }
            if second.get(rel).map(|s| s.1) != Some(*ino) {
                fails.push(format!(
                    "{}: st_ino not stable: {ino} then {:?}",
                    rel.display(),
                    second.get(rel).map(|s| s.1)
                ));
            }
            if *is_dir && *nlink < 1 {
                fails.push(format!("{}: directory nlink {nlink}", rel.display()));
            }
            by_ino.entry(*ino).or_default().push(rel.clone());
        }
        let expected_groups: BTreeSet<Vec<PathBuf>> = [
            vec![PathBuf::from("d1/hl_b"), PathBuf::from("hl_a")],
            vec![PathBuf::from("hl3_a"), PathBuf::from("hl3_b")],
        ]
        .into_iter()
        .collect();
        for (ino, paths) in &by_ino {
            if paths.len() > 1 && !expected_groups.contains(paths) {
                fails.push(format!("st_ino {ino} shared by {paths:?}"));
            }
        }
        for g in &expected_groups {
            let inos: BTreeSet<u64> = g.iter().filter_map(|x| first.get(x).map(|s| s.1)).collect();
            if inos.len() != 1 {
                fails.push(format!("hard links {g:?} do not share st_ino: {inos:?}"));
            }
        }
        for (dir, ents) in &tree {
            let dir_ino = first[dir].1;
            let mut seen = BTreeSet::new();
            for e in ents {
                if !seen.insert(e.name.clone()) {
                    fails.push(format!("{}: {:?} listed twice", dir.display(), e.name));
                }
                if e.name == "." {
                    if e.ino != dir_ino {
                        fails.push(format!(
                            "{}/.: d_ino {} != st_ino {dir_ino}",
                            dir.display(),
                            e.ino
                        ));
                    }
                    continue;
                }
                if e.name == ".." {
                    continue;
                }
                let rel = dir.join(&e.name);
                let (_, ino, _, _) = first[&rel];
                if e.ino != ino {
                    fails.push(format!(
                        "{}: d_ino {} != st_ino {ino}",
                        rel.display(),
                        e.ino
                    ));
                }
            }
            for dot in [".", ".."] {
                if !seen.contains(std::ffi::OsStr::new(dot)) {
                    fails.push(format!("{}: readdir lacks {dot}", dir.display()));
                }
            }
        }
        assert!(
            fails.is_empty(),
            "inode problems:\n  {}",
            fails.join("\n  ")
        );
    });
}

/// `..` in a (non-root) directory's readdir carries the parent's inode number.
#[test]
fn readdir_dotdot_inode() {
    let (_t, root) = scratch(&["l1", "l2", "m"]);
    let (l1, l2) = (root.join("l1"), root.join("l2"));
    write_file(&l1.join("a/b/c/f"), "f");
    write_file(&l2.join("a/b/g"), "g");
    write_file(&l2.join("solo/x"), "x");
    let m = Ovlfs::new([&l1, &l2]).mount(&root.join("m"));
    let p = m.path().to_path_buf();
    with_watchdog(BODY_SECS, m.path(), move || {
        let mut fails = Vec::new();
        for (dir, parent) in [("a", ""), ("a/b", "a"), ("a/b/c", "a/b"), ("solo", "")] {
            let want = fs::symlink_metadata(p.join(parent))
                .expect("lstat parent")
                .ino();
            let ents = read_dir_raw(&p.join(dir)).expect("readdir");
            match ents.iter().find(|e| e.name == "..") {
                Some(e) if e.ino == want => {}
                Some(e) => fails.push(format!("{dir}/..: d_ino {} != parent st_ino {want}", e.ino)),
                None => fails.push(format!("{dir}: no .. entry")),
            }
        }
        assert!(fails.is_empty(), "{}", fails.join("\n"));
    });
}

/// A large merged directory (several getdents batches): every visible name listed exactly once,
/// whiteouts applied, shadowed names deduplicated, d_ino == st_ino.
#[test]
fn large_merged_directory_listing() {
    if !require_root("large_merged_directory_listing") {
        return;
    }
    let (_t, root) = scratch(&["l1", "l2", "l3", "m"]);
    let (l1, l2, l3) = (root.join("l1"), root.join("l2"), root.join("l3"));
    let n = 3000;
    let mut want = BTreeSet::new();
    for i in 0..n {
        let name = format!("entry-with-a-longish-name-{i:05}");
        write_file(&l3.join("big").join(&name), "3");
        if i % 2 == 0 {
            write_file(&l2.join("big").join(&name), "2");
        }
        if i % 7 == 0 {
            whiteout_chardev(&l1.join("big").join(&name));
        } else if i % 11 == 0 {
            whiteout_aufs(&l1.join("big"), &name);
        } else {
            want.insert(name);
        }
        if i % 5 == 0 {
            let extra = format!("l1-only-{i:05}");
            write_file(&l1.join("big").join(&extra), "1");
            want.insert(extra);
        }
    }
    let m = Ovlfs::new([&l1, &l2, &l3]).mount(&root.join("m"));
    let p = m.path().join("big");
    with_watchdog(BODY_SECS, m.path(), move || {
        // A partial read, then rewinddir, then a full read from the start.
        {
            use rustix::fs::{Mode, OFlags};
            let fd = rustix::fs::open(&p, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
                .expect("open big");
            let mut d = rustix::fs::Dir::new(fd).expect("Dir");
            for _ in 0..100 {
                d.read().expect("entry").expect("readdir");
            }
            d.rewind();
            let mut n = 0;
            while let Some(e) = d.read() {
                e.expect("readdir after rewind");
                n += 1;
            }
            assert_eq!(
                n,
                want.len() + 2,
                "entries after rewinddir (incl. . and ..)"
            );
        }
        for round in 0..2 {
            let ents = read_dir_raw(&p).expect("readdir big");
            let mut seen = BTreeSet::new();
            let mut dups = Vec::new();
            for e in &ents {
                if !seen.insert(e.name.to_string_lossy().into_owned()) {
                    dups.push(e.name.clone());
                }
            }
            seen.remove(".");
            seen.remove("..");
            assert!(
                dups.is_empty(),
                "round {round}: listed more than once: {dups:?}"
            );
            let missing: Vec<_> = want.difference(&seen).take(10).collect();
            let extra: Vec<_> = seen.difference(&want).take(10).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "round {round}: {} listed, {} expected; missing (first 10) {missing:?}; \
                 unexpected (first 10) {extra:?}",
                seen.len(),
                want.len()
            );
            for e in ents
                .iter()
                .filter(|e| e.name != "." && e.name != "..")
                .step_by(97)
            {
                let md = fs::symlink_metadata(p.join(&e.name)).expect("lstat entry");
                assert_eq!(e.ino, md.ino(), "{:?}: d_ino vs st_ino", e.name);
            }
        }
    });
}

/// st_ino of every entry is the same after unmounting and mounting the same layers again.
#[test]
fn inode_numbers_stable_across_remount() {
    if !require_root("inode_numbers_stable_across_remount") {
        return;
    }
    let (_t, root) = scratch(&["m", "u", "w"]);
    let lowers = build_lowers(&root, Ns::Trusted);
    build_upper(&root.join("u"), Ns::Trusted);
    let inos = |mnt: &Path| -> BTreeMap<PathBuf, u64> {
        readdir_tree(mnt)
            .into_iter()
            .flat_map(|(dir, ents)| {
                ents.into_iter()
                    .filter(|e| e.name != "." && e.name != "..")
                    .map(move |e| dir.join(e.name))
                    .collect::<Vec<_>>()
            })
            .chain([PathBuf::new()])
            .map(|rel| {
                let md = fs::symlink_metadata(mnt.join(&rel)).expect("lstat");
                (rel, md.ino())
            })
            .collect()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let m = Ovlfs::new(&lowers)
            .upper(root.join("u"), root.join("w"))
            .mount(&root.join("m"));
        let p = m.path().to_path_buf();
        runs.push(with_watchdog(BODY_SECS, m.path(), move || inos(&p)));
        drop(m);
    }
    let changed: Vec<String> = runs[0]
        .iter()
        .filter(|(k, v)| runs[1].get(*k) != Some(v))
        .map(|(k, v)| format!("{}: {v} then {:?}", k.display(), runs[1].get(k)))
        .collect();
    assert_eq!(runs[0].len(), runs[1].len(), "different trees");
    assert!(
        changed.is_empty(),
        "st_ino changed across remount:\n  {}",
        changed.join("\n  ")
    );
}
