//! Snapshots of merged trees and layers, and their comparison.

use super::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------------------------

/// The merged tree (common snapshot) plus the comparable part of every mtime.
pub(crate) struct Snap {
    tree: TreeSnapshot,
    mtimes: BTreeMap<PathBuf, String>,
}

pub(crate) fn snap(root: &Path) -> Result<Snap, String> {
    let tree = std::panic::catch_unwind(|| snapshot_tree(root)).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "snapshot panicked".into())
    })?;
    let mut tree = tree;
    if ignored("nlink") {
        for e in tree.entries.values_mut() {
            e.nlink = None;
        }
    }
    if ignored("links") {
        tree.link_groups.clear();
    }
    // Times are compared below, in their comparable form only (old values exactly, wall-clock
    // ones as "recent").
    for e in tree.entries.values_mut() {
        e.mtime = (0, 0);
    }
    let mut mtimes = BTreeMap::new();
    for k in tree.entries.keys() {
        if let Ok(md) = fs::symlink_metadata(root.join(k)) {
            mtimes.insert(
                k.clone(),
                time_class(md.mtime(), md.mtime_nsec(), md.is_dir()),
            );
        }
    }
    Ok(Snap { tree, mtimes })
}

pub(crate) fn diff_snaps(a_label: &str, a: &Snap, b_label: &str, b: &Snap) -> Vec<String> {
    let mut d = diff_trees(a_label, &a.tree, b_label, &b.tree);
    for (k, va) in &a.mtimes {
        if let Some(vb) = b.mtimes.get(k)
            && va != vb
        {
            d.push(format!(
                "mtime differs: /{}: {a_label} = {va}  vs  {b_label} = {vb}",
                k.display()
            ));
        }
    }
    d
}

fn describe_raw(p: &Path) -> String {
    let md = match fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) => return format!("lstat error {e}"),
    };
    let mut s = format!(
        "{:?} mode={:o} uid={} gid={} size={} rdev={} nlink={} ino={} mtime={}.{} ctime={}.{}",
        Kind::of(md.file_type()),
        md.mode(),
        md.uid(),
        md.gid(),
        md.size(),
        md.rdev(),
        md.nlink(),
        md.ino(),
        md.mtime(),
        md.mtime_nsec(),
        md.ctime(),
        md.ctime_nsec()
    );
    if md.is_file() {
        match fs::read(p) {
            Ok(b) => s += &format!(" fnv={:016x}", fnv64(&b)),
            Err(e) => s += &format!(" read error {e}"),
        }
    }
    if md.file_type().is_symlink() {
        s += &format!(" -> {:?}", fs::read_link(p).ok());
    }
    match list_xattrs(p) {
        Ok(mut names) => {
            names.sort();
            for n in names {
                let v = get_xattr(p, &n).unwrap_or_else(|e| format!("<{e}>").into_bytes());
                s += &format!(" {n}={:?}", String::from_utf8_lossy(&v));
            }
        }
        Err(e) => s += &format!(" listxattr error {e}"),
    }
    s
}

/// Everything about every object of the layers except atime (keyed "L<n>/path").
pub(crate) fn layers_snapshot(layers: &[PathBuf]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (i, l) in layers.iter().enumerate() {
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let abs = l.join(&rel);
            m.insert(format!("L{}/{}", i + 1, rel.display()), describe_raw(&abs));
            if fs::symlink_metadata(&abs).is_ok_and(|md| md.is_dir())
                && let Ok(rd) = fs::read_dir(&abs)
            {
                for e in rd.flatten() {
                    stack.push(rel.join(e.file_name()));
                }
            }
        }
    }
    m
}

pub(crate) fn diff_maps(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<String> {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let mut v = Vec::new();
    for k in keys {
        match (before.get(k), after.get(k)) {
            (Some(a), Some(b)) if a != b => {
                v.push(format!("changed {k}:\n      before {a}\n      after  {b}"))
            }
            (Some(_), None) => v.push(format!("removed {k}")),
            (None, Some(b)) => v.push(format!("added {k}: {b}")),
            _ => {}
        }
    }
    v
}

/// path → st_ino of every object (no following), for the initial inode pairing.
pub(crate) fn inos(root: &Path) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let Ok(md) = fs::symlink_metadata(root.join(&rel)) else {
            continue;
        };
        m.insert(rel.clone(), md.ino());
        if md.is_dir()
            && let Ok(rd) = fs::read_dir(root.join(&rel))
        {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                stack.push(if rel.is_empty() {
                    n
                } else {
                    format!("{rel}/{n}")
                });
            }
        }
    }
    m
}

/// The pairing of kernel and ovlfs inode numbers of the objects present at the start (all from
/// the lowers): each must keep its number through copy-up, rename and link.
#[derive(Default)]
pub(crate) struct InoPairs {
    k2o: HashMap<u64, (u64, String)>,
    o2k: HashMap<u64, (u64, String)>,
}

impl InoPairs {
    pub(crate) fn new(k: &BTreeMap<String, u64>, o: &BTreeMap<String, u64>) -> InoPairs {
        let mut p = InoPairs::default();
        for (path, ki) in k {
            if let Some(oi) = o.get(path) {
                p.k2o.insert(*ki, (*oi, path.clone()));
                p.o2k.insert(*oi, (*ki, path.clone()));
            }
        }
        p
    }

    pub(crate) fn check(&self, kino: u64, oino: u64) -> Result<(), String> {
        if ignored("ino") {
            return Ok(());
        }
        if let Some((want, orig)) = self.k2o.get(&kino)
            && *want != oino
        {
            return Err(format!(
                "kernel reports the st_ino it gave initial /{orig} ({kino}); ovlfs gave that object \
                 {want} but now reports {oino}{}",
                match self.o2k.get(&oino) {
                    Some((_, o2)) => format!(" (the number of initial /{o2})"),
                    None => String::new(),
                }
            ));
        }
        if let Some((want, orig)) = self.o2k.get(&oino)
            && *want != kino
        {
            return Err(format!(
                "ovlfs reports the st_ino it gave initial /{orig} ({oino}) but the kernel reports \
                 {kino}, not {want} (st_ino not stable, or reused for another object)"
            ));
        }
        Ok(())
    }
}
