//! Tree snapshots with a readable diff: one merged view against another (ovlfs against the
//! kernel, before and after a remount), one tree before and after (layers that must not change),
//! and objects watched without being read or listed. [`Fields`] says what is recorded.

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

/// Which attributes a snapshot records, and so which ones [`diff_trees`] compares: what is not
/// recorded is `None` (or empty) in every entry. Always recorded: the type, readdir's d_type
/// (for walked entries), the permission bits with setuid/setgid/sticky, the owner, symlink
/// targets, device numbers, st_nlink of non-directories and which paths share an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields {
    /// FNV-64 of every regular file's content (reading it updates its atime).
    pub content: bool,
    /// Every xattr namespace (`trusted.*`, `security.*`, ...), not only `user.*`.
    pub all_xattrs: bool,
    /// st_size and st_nlink of every object, not only st_size of regular files and st_nlink of
    /// non-directories (the ones two filesystems' merged views agree on).
    pub all_sizes: bool,
    /// st_ino.
    pub ino: bool,
    pub mtime: bool,
    pub ctime: bool,
    pub atime: bool,
}

impl Fields {
    /// A merged view as a user sees it, comparable between two filesystems: contents, `user.*`
    /// xattrs and mtime on top of what is always recorded.
    pub const MERGED: Fields = Fields {
        content: true,
        all_xattrs: false,
        all_sizes: false,
        ino: false,
        mtime: true,
        ctime: false,
        atime: false,
    };
    /// One directory tree before and after: everything but atimes (reads legitimately update
    /// those) — every xattr, inode numbers, ctimes, every size and link count.
    pub const LAYER: Fields = Fields {
        content: true,
        all_xattrs: true,
        all_sizes: true,
        ino: true,
        mtime: true,
        ctime: true,
        atime: false,
    };
    /// Objects watched without reading them (see [`snapshot_entries`]): everything, atimes
    /// included, except contents.
    pub const UNREAD: Fields = Fields {
        content: false,
        atime: true,
        ..Fields::LAYER
    };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySnapshot {
    pub kind: Kind,
    /// d_type from the parent's readdir (`None` for the root and for unlisted entries).
    pub d_type: Option<Kind>,
    /// Permission bits plus setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular files ([`Fields::all_sizes`]: everything).
    pub size: Option<u64>,
    /// FNV-64 of the content, regular files only (or the read error).
    pub content: Option<Result<u64, String>>,
    pub symlink_target: Option<PathBuf>,
    /// Device files only.
    pub rdev: Option<u64>,
    /// Sorted xattrs (name, value), or an error description as the sole entry.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Non-directories ([`Fields::all_sizes`]: everything).
    pub nlink: Option<u64>,
    pub ino: Option<u64>,
    /// (seconds, nanoseconds).
    pub mtime: Option<(i64, i64)>,
    pub ctime: Option<(i64, i64)>,
    pub atime: Option<(i64, i64)>,
}

#[derive(Debug, Clone)]
pub struct TreeSnapshot {
    /// What was recorded.
    pub fields: Fields,
    pub entries: BTreeMap<PathBuf, EntrySnapshot>,
    /// Sets (size ≥ 2) of non-directory paths sharing one (st_dev, st_ino).
    pub link_groups: BTreeSet<Vec<PathBuf>>,
}

/// Sorted xattrs of `path` (not following a symlink): `user.*` ones only unless `all`. A
/// failing listxattr shows as the sole entry, a failing getxattr as the value.
pub fn xattrs_of(path: &Path, all: bool) -> Vec<(String, Vec<u8>)> {
    match list_xattrs(path) {
        Ok(names) => {
            let mut v: Vec<(String, Vec<u8>)> = names
                .into_iter()
                .filter(|n| all || n.starts_with("user."))
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

/// Sorted `user.*` xattrs of `path` (see [`xattrs_of`]).
pub fn user_xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    xattrs_of(path, false)
}

pub fn snapshot_entry(
    path: &Path,
    md: &fs::Metadata,
    d_type: Option<Kind>,
    fields: Fields,
) -> EntrySnapshot {
    let kind = Kind::of(md.file_type());
    let is_file = kind == Kind::File;
    EntrySnapshot {
        kind,
        d_type,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: (is_file || fields.all_sizes).then(|| md.size()),
        content: (is_file && fields.content)
            .then(|| fs::read(path).map(|b| fnv64(&b)).map_err(|e| e.to_string())),
        symlink_target: (kind == Kind::Symlink).then(|| {
            fs::read_link(path).unwrap_or_else(|e| PathBuf::from(format!("<readlink error: {e}>")))
        }),
        rdev: matches!(kind, Kind::CharDev | Kind::BlockDev).then(|| md.rdev()),
        xattrs: xattrs_of(path, fields.all_xattrs),
        nlink: (kind != Kind::Dir || fields.all_sizes).then(|| md.nlink()),
        ino: fields.ino.then(|| md.ino()),
        mtime: fields.mtime.then(|| (md.mtime(), md.mtime_nsec())),
        ctime: fields.ctime.then(|| (md.ctime(), md.ctime_nsec())),
        atime: fields.atime.then(|| (md.atime(), md.atime_nsec())),
    }
}

/// An entry that was listed but cannot be stat'ed: recorded so that the diff shows it.
fn unstatable(d_type: Option<Kind>, err: &io::Error) -> EntrySnapshot {
    EntrySnapshot {
        kind: Kind::Unknown,
        d_type,
        mode: 0,
        uid: 0,
        gid: 0,
        size: None,
        content: Some(Err(format!("lstat failed: {err}"))),
        symlink_target: None,
        rdev: None,
        xattrs: Vec::new(),
        nlink: None,
        ino: None,
        mtime: None,
        ctime: None,
        atime: None,
    }
}

/// Groups of non-directory paths sharing one (st_dev, st_ino), into `snap.link_groups`.
fn add_link_groups(snap: &mut TreeSnapshot, inos: BTreeMap<(u64, u64), Vec<PathBuf>>) {
    for (_, mut v) in inos {
        if v.len() > 1 {
            v.sort();
            snap.link_groups.insert(v);
        }
    }
}

/// [`snapshot_tree_with`] the [`Fields::MERGED`] attributes.
pub fn snapshot_tree(root: &Path) -> TreeSnapshot {
    snapshot_tree_with(root, Fields::MERGED)
}

/// Walk `root` without following symlinks, recording `fields`. Relative path "" is the root
/// itself. Panics when the root cannot be stat'ed or a directory cannot be listed.
pub fn snapshot_tree_with(root: &Path, fields: Fields) -> TreeSnapshot {
    let mut snap = TreeSnapshot {
        fields,
        entries: BTreeMap::new(),
        link_groups: BTreeSet::new(),
    };
    let mut inos: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    let root_md =
        fs::symlink_metadata(root).unwrap_or_else(|e| panic!("lstat {}: {e}", root.display()));
    snap.entries
        .insert(PathBuf::new(), snapshot_entry(root, &root_md, None, fields));
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
                    snap.entries.insert(crel, unstatable(Some(e.d_type), &err));
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
                .insert(crel, snapshot_entry(&cabs, &md, Some(e.d_type), fields));
        }
    }
    add_link_groups(&mut snap, inos);
    snap
}

/// The objects `rels` below `root` ("" is the root itself), stat'ed without listing any
/// directory, and without reading any file unless `fields.content`: on a `strictatime` mount a
/// listing or a read of ours would change the atimes compared. Panics when one cannot be
/// stat'ed.
pub fn snapshot_entries(root: &Path, rels: &[&str], fields: Fields) -> TreeSnapshot {
    let mut snap = TreeSnapshot {
        fields,
        entries: BTreeMap::new(),
        link_groups: BTreeSet::new(),
    };
    let mut inos: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    for rel in rels {
        let p = root.join(rel);
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        if !md.is_dir() {
            inos.entry((md.dev(), md.ino()))
                .or_default()
                .push(PathBuf::from(rel));
        }
        snap.entries
            .insert(PathBuf::from(rel), snapshot_entry(&p, &md, None, fields));
    }
    add_link_groups(&mut snap, inos);
    snap
}

/// [`snapshot_tree_with`] the [`Fields::LAYER`] attributes of every layer.
pub fn snapshot_layers<P: AsRef<Path>>(layers: &[P]) -> Vec<TreeSnapshot> {
    layers
        .iter()
        .map(|l| snapshot_tree_with(l.as_ref(), Fields::LAYER))
        .collect()
}

/// Differences between two [`snapshot_layers`] of the same layers, each prefixed with the
/// layer (`lower1` is the first one given).
pub fn diff_layers(before: &[TreeSnapshot], after: &[TreeSnapshot]) -> Vec<String> {
    assert_eq!(
        before.len(),
        after.len(),
        "snapshots of different layer lists"
    );
    before
        .iter()
        .zip(after)
        .enumerate()
        .flat_map(|(i, (b, a))| {
            diff_trees("before", b, "after", a)
                .into_iter()
                .map(move |d| format!("lower{}: {d}", i + 1))
        })
        .collect()
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
                field!(ino, "{:?}");
                field!(mtime, "{:?}");
                field!(ctime, "{:?}");
                field!(atime, "{:?}");
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
            "trees differ ({} difference(s), {} vs {} entries):\n  {}",
            d.len(),
            a.entries.len(),
            b.entries.len(),
            d.join("\n  ")
        );
    }
}

/// Panics with a readable diff when the tree at `root` no longer matches `before`, a
/// [`snapshot_tree_with`] of it (taken again with the same fields; `label` names the tree).
pub fn assert_tree_unchanged(label: &str, before: &TreeSnapshot, root: &Path) {
    let after = snapshot_tree_with(root, before.fields);
    assert_trees_equal(
        &format!("{label} before"),
        before,
        &format!("{label} after"),
        &after,
    );
}
