//! Tree snapshots with a readable diff.

use super::*;

// ---------------------------------------------------------------------------------------------
// Tree snapshots
// ---------------------------------------------------------------------------------------------

pub fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySnapshot {
    pub kind: Kind,
    /// d_type from the parent's readdir (`None` for the root).
    pub d_type: Option<Kind>,
    /// Permission bits plus setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular files only.
    pub size: Option<u64>,
    /// FNV-64 of the content, regular files only (or the read error).
    pub content: Option<Result<u64, String>>,
    pub symlink_target: Option<PathBuf>,
    /// Device files only.
    pub rdev: Option<u64>,
    /// Sorted `user.*` xattrs (name, value), or an error description as the sole entry.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Non-directories only.
    pub nlink: Option<u64>,
    /// st_mtime (seconds, nanoseconds).
    pub mtime: (i64, i64),
}

#[derive(Debug, Clone, Default)]
pub struct TreeSnapshot {
    pub entries: BTreeMap<PathBuf, EntrySnapshot>,
    /// Sets (size ≥ 2) of non-directory paths sharing one (st_dev, st_ino).
    pub link_groups: BTreeSet<Vec<PathBuf>>,
}

pub fn user_xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    match list_xattrs(path) {
        Ok(names) => {
            let mut v: Vec<(String, Vec<u8>)> = names
                .into_iter()
                .filter(|n| n.starts_with("user."))
                .map(|n| {
                    let val = get_xattr(path, &n)
                        .unwrap_or_else(|e| format!("<getxattr error: {e}>").into_bytes());
                    (n, val)
                })
                .collect();
            v.sort();
            v
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Vec::new(),
        Err(e) => vec![("<listxattr error>".into(), e.to_string().into_bytes())],
    }
}

pub fn snapshot_entry(path: &Path, md: &fs::Metadata, d_type: Option<Kind>) -> EntrySnapshot {
    let kind = Kind::of(md.file_type());
    let is_file = kind == Kind::File;
    EntrySnapshot {
        kind,
        d_type,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: is_file.then(|| md.size()),
        content: is_file.then(|| fs::read(path).map(|b| fnv64(&b)).map_err(|e| e.to_string())),
        symlink_target: (kind == Kind::Symlink).then(|| {
            fs::read_link(path).unwrap_or_else(|e| PathBuf::from(format!("<readlink error: {e}>")))
        }),
        rdev: matches!(kind, Kind::CharDev | Kind::BlockDev).then(|| md.rdev()),
        xattrs: user_xattrs(path),
        nlink: (kind != Kind::Dir).then(|| md.nlink()),
        mtime: (md.mtime(), md.mtime_nsec()),
    }
}

/// Walk `root` without following symlinks. Relative path "" is the root itself.
pub fn snapshot_tree(root: &Path) -> TreeSnapshot {
    let mut snap = TreeSnapshot::default();
    let mut inos: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    let root_md =
        fs::symlink_metadata(root).unwrap_or_else(|e| panic!("lstat {}: {e}", root.display()));
    snap.entries
        .insert(PathBuf::new(), snapshot_entry(root, &root_md, None));
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = root.join(&rel);
        let ents = read_dir_raw(&abs).unwrap_or_else(|e| panic!("readdir {}: {e}", abs.display()));
        for e in ents {
            if e.name == "." || e.name == ".." {
                continue;
            }
            let crel = rel.join(&e.name);
            let cabs = root.join(&crel);
            let md = match fs::symlink_metadata(&cabs) {
                Ok(md) => md,
                Err(err) => {
                    // Listed but not stat-able: record it so the diff shows it.
                    snap.entries.insert(
                        crel,
                        EntrySnapshot {
                            kind: Kind::Unknown,
                            d_type: Some(e.d_type),
                            mode: 0,
                            uid: 0,
                            gid: 0,
                            size: None,
                            content: Some(Err(format!("lstat failed: {err}"))),
                            symlink_target: None,
                            rdev: None,
                            xattrs: Vec::new(),
                            nlink: None,
                            mtime: (0, 0),
                        },
                    );
                    continue;
                }
            };
            if md.is_dir() {
                stack.push(crel.clone());
            } else {
                inos.entry((md.dev(), md.ino()))
                    .or_default()
                    .push(crel.clone());
            }
            snap.entries
                .insert(crel, snapshot_entry(&cabs, &md, Some(e.d_type)));
        }
    }
    for (_, mut v) in inos {
        if v.len() > 1 {
            v.sort();
            snap.link_groups.insert(v);
        }
    }
    snap
}

pub fn show_path(p: &Path) -> String {
    if p.as_os_str().is_empty() {
        "/".into()
    } else {
        format!("/{}", p.display())
    }
}

/// Human-readable differences between two snapshots (empty when equal).
pub fn diff_trees(a_label: &str, a: &TreeSnapshot, b_label: &str, b: &TreeSnapshot) -> Vec<String> {
    let mut out = Vec::new();
    let keys: BTreeSet<&PathBuf> = a.entries.keys().chain(b.entries.keys()).collect();
    for k in keys {
        match (a.entries.get(k), b.entries.get(k)) {
            (Some(x), None) => out.push(format!(
                "only in {a_label}: {} ({:?})",
                show_path(k),
                x.kind
            )),
            (None, Some(y)) => out.push(format!(
                "only in {b_label}: {} ({:?})",
                show_path(k),
                y.kind
            )),
            (Some(x), Some(y)) if x != y => {
                let mut s = format!("differs: {}", show_path(k));
                macro_rules! field {
                    ($f:ident, $fmt:literal) => {
                        if x.$f != y.$f {
                            let _ = write!(
                                s,
                                concat!("\n      {}: {} = ", $fmt, "  vs  {} = ", $fmt),
                                stringify!($f),
                                a_label,
                                x.$f,
                                b_label,
                                y.$f
                            );
                        }
                    };
                }
                field!(kind, "{:?}");
                field!(d_type, "{:?}");
                field!(mode, "{:#o}");
                field!(uid, "{}");
                field!(gid, "{}");
                field!(size, "{:?}");
                field!(content, "{:?}");
                field!(symlink_target, "{:?}");
                field!(rdev, "{:?}");
                if x.xattrs != y.xattrs {
                    let fmt = |v: &Vec<(String, Vec<u8>)>| {
                        v.iter()
                            .map(|(n, val)| format!("{n}={:?}", String::from_utf8_lossy(val)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    let _ = write!(
                        s,
                        "\n      xattrs: {a_label} = [{}]  vs  {b_label} = [{}]",
                        fmt(&x.xattrs),
                        fmt(&y.xattrs)
                    );
                }
                field!(nlink, "{:?}");
                field!(mtime, "{:?}");
                out.push(s);
            }
            _ => {}
        }
    }
    for g in a.link_groups.difference(&b.link_groups) {
        out.push(format!("hard-link group only in {a_label}: {g:?}"));
    }
    for g in b.link_groups.difference(&a.link_groups) {
        out.push(format!("hard-link group only in {b_label}: {g:?}"));
    }
    out
}

/// Panics with a readable diff when the snapshots differ.
pub fn assert_trees_equal(a_label: &str, a: &TreeSnapshot, b_label: &str, b: &TreeSnapshot) {
    let d = diff_trees(a_label, a, b_label, b);
    if !d.is_empty() {
        panic!(
            "merged trees differ ({} difference(s), {} vs {} entries):\n  {}",
            d.len(),
            a.entries.len(),
            b.entries.len(),
            d.join("\n  ")
        );
    }
}
