//! Snapshots of merged trees (the shared snapshot, with mtimes in comparable form) and their
//! comparison; the inode pairing between the two filesystems.

use super::*;
use std::collections::{BTreeMap, HashMap};
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
    let mut mtimes = BTreeMap::new();
    for (k, e) in tree.entries.iter_mut() {
        if let Some((sec, nsec)) = e.mtime.take() {
            mtimes.insert(k.clone(), time_class(sec, nsec, e.kind == Kind::Dir));
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
