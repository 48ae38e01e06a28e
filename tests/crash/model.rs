//! The model of the merged tree: what every path must show after a kill, and its check.

use super::*;

// ---------------------------------------------------------------------------------------------
// The model of the merged tree
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub(crate) enum Ent {
    /// A directory whose metadata comes from the lower directory `src`.
    Dir {
        src: PathBuf,
    },
    /// A file: the lower file `src`'s content and metadata, then `appended`.
    File {
        src: PathBuf,
        appended: Vec<u8>,
    },
    Link {
        target: PathBuf,
    },
}

/// Relative path → entry (the root itself is not in the map).
pub(crate) type Model = BTreeMap<PathBuf, Ent>;

pub(crate) fn model_of_lower(lower: &Path) -> Model {
    let mut m = Model::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(lower.join(&rel)).expect("read lower") {
            let e = e.expect("entry");
            let crel = rel.join(e.file_name());
            let md = fs::symlink_metadata(e.path()).expect("lstat lower");
            let ent = if md.is_dir() {
                stack.push(crel.clone());
                Ent::Dir { src: crel.clone() }
            } else if md.file_type().is_symlink() {
                Ent::Link {
                    target: fs::read_link(e.path()).expect("readlink"),
                }
            } else {
                Ent::File {
                    src: crel.clone(),
                    appended: Vec::new(),
                }
            };
            m.insert(crel, ent);
        }
    }
    m
}

#[derive(Clone, Debug)]
pub(crate) enum Step {
    /// open(O_WRONLY|O_APPEND) (the copy-up), write, fsync, close.
    Append {
        path: PathBuf,
        data: Vec<u8>,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
    },
    /// utimensat(atime = now, mtime omitted): a copy-up without a visible change.
    CopyUp(PathBuf),
    Unlink(PathBuf),
    Rmdir(PathBuf),
}

impl Step {
    pub(crate) fn describe(&self) -> String {
        match self {
            Step::Append { path, data } => {
                format!("append {} bytes to {}", data.len(), path.display())
            }
            Step::Rename { from, to } => format!("rename {} -> {}", from.display(), to.display()),
            Step::CopyUp(p) => format!("copy up {} (touch -a)", p.display()),
            Step::Unlink(p) => format!("unlink {}", p.display()),
            Step::Rmdir(p) => format!("rmdir {}", p.display()),
        }
    }

    pub(crate) fn apply(&self, m: &mut Model) {
        match self {
            Step::Append { path, data } => match m.get_mut(path) {
                Some(Ent::File { appended, .. }) => appended.extend_from_slice(data),
                other => panic!("model: append to {}: {other:?}", path.display()),
            },
            Step::Rename { from, to } => {
                let keys: Vec<PathBuf> =
                    m.keys().filter(|k| k.starts_with(from)).cloned().collect();
                assert!(
                    !keys.is_empty(),
                    "model: rename of missing {}",
                    from.display()
                );
                for k in keys {
                    let v = m.remove(&k).expect("key");
                    let rest = k.strip_prefix(from).expect("prefix");
                    let nk = if rest.as_os_str().is_empty() {
                        to.clone()
                    } else {
                        to.join(rest)
                    };
                    m.insert(nk, v);
                }
            }
            Step::CopyUp(_) => {}
            Step::Unlink(p) | Step::Rmdir(p) => {
                assert!(
                    m.remove(p).is_some(),
                    "model: remove of missing {}",
                    p.display()
                );
            }
        }
    }

    pub(crate) fn run(&self, mnt: &Path) -> io::Result<()> {
        match self {
            Step::Append { path, data } => {
                let mut f = fs::OpenOptions::new().append(true).open(mnt.join(path))?;
                f.write_all(data)?;
                f.sync_all()?;
                Ok(())
            }
            Step::Rename { from, to } => fs::rename(mnt.join(from), mnt.join(to)),
            Step::CopyUp(p) => {
                let ts = rustix::fs::Timestamps {
                    last_access: rustix::fs::Timespec {
                        tv_sec: 0,
                        tv_nsec: libc::UTIME_NOW,
                    },
                    last_modification: rustix::fs::Timespec {
                        tv_sec: 0,
                        tv_nsec: libc::UTIME_OMIT,
                    },
                };
                rustix::fs::utimensat(
                    rustix::fs::CWD,
                    mnt.join(p),
                    &ts,
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(Into::into)
            }
            Step::Unlink(p) => fs::remove_file(mnt.join(p)),
            Step::Rmdir(p) => fs::remove_dir(mnt.join(p)),
        }
    }
}

/// Differences between the merged tree at `mnt` and `model` (empty when equal).
pub(crate) fn verify(mnt: &Path, lower: &Path, model: &Model) -> Vec<String> {
    let mut out = Vec::new();
    // Every path in the merged tree.
    let mut actual = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let rd = match fs::read_dir(mnt.join(&rel)) {
            Ok(rd) => rd,
            Err(e) => {
                out.push(format!("readdir /{}: {e}", rel.display()));
                continue;
            }
        };
        for e in rd {
            let e = match e {
                Ok(e) => e,
                Err(err) => {
                    out.push(format!("readdir /{}: {err}", rel.display()));
                    break;
                }
            };
            let crel = rel.join(e.file_name());
            match fs::symlink_metadata(mnt.join(&crel)) {
                Ok(md) => {
                    if md.is_dir() {
                        stack.push(crel.clone());
                    }
                    actual.insert(crel, md);
                }
                Err(err) => out.push(format!(
                    "listed but lstat fails: /{}: {err}",
                    crel.display()
                )),
            }
        }
    }
    for k in actual.keys() {
        if !model.contains_key(k) {
            out.push(format!("unexpected entry /{}", k.display()));
        }
    }
    for (k, ent) in model {
        let Some(md) = actual.get(k) else {
            out.push(format!("missing /{} ({})", k.display(), kind_name(ent)));
            continue;
        };
        let p = mnt.join(k);
        let meta_vs = |src: &Path, out: &mut Vec<String>| {
            let l = fs::symlink_metadata(lower.join(src)).expect("lstat lower src");
            if (md.mode(), md.uid(), md.gid()) != (l.mode(), l.uid(), l.gid()) {
                out.push(format!(
                    "/{}: mode/uid/gid {:o}/{}/{} instead of the lower {:o}/{}/{}",
                    k.display(),
                    md.mode(),
                    md.uid(),
                    md.gid(),
                    l.mode(),
                    l.uid(),
                    l.gid()
                ));
            }
            let (xa, xl) = (user_xattrs(&p), user_xattrs(&lower.join(src)));
            if xa != xl {
                out.push(format!(
                    "/{}: user xattrs {xa:?} instead of {xl:?}",
                    k.display()
                ));
            }
            l
        };
        match ent {
            Ent::Dir { src } => {
                if !md.is_dir() {
                    out.push(format!("/{}: not a directory", k.display()));
                    continue;
                }
                meta_vs(src, &mut out);
            }
            Ent::Link { target } => match fs::read_link(&p) {
                Ok(t) if &t == target => {}
                Ok(t) => out.push(format!(
                    "/{}: symlink to {t:?}, expected {target:?}",
                    k.display()
                )),
                Err(e) => out.push(format!("/{}: readlink: {e}", k.display())),
            },
            Ent::File { src, appended } => {
                if !md.is_file() {
                    out.push(format!("/{}: not a regular file", k.display()));
                    continue;
                }
                let l = meta_vs(src, &mut out);
                if md.size() != l.size() + appended.len() as u64 {
                    out.push(format!(
                        "/{}: size {} instead of {} (lower {} + appended {})",
                        k.display(),
                        md.size(),
                        l.size() + appended.len() as u64,
                        l.size(),
                        appended.len()
                    ));
                }
                if appended.is_empty()
                    && (md.mtime(), md.mtime_nsec()) != (l.mtime(), l.mtime_nsec())
                {
                    out.push(format!(
                        "/{}: mtime differs from the lower file",
                        k.display()
                    ));
                }
                if let Some(d) = compare_content(&p, &lower.join(src), appended) {
                    out.push(format!("/{}: {d}", k.display()));
                }
            }
        }
    }
    out
}

pub(crate) fn kind_name(e: &Ent) -> &'static str {
    match e {
        Ent::Dir { .. } => "dir",
        Ent::File { .. } => "file",
        Ent::Link { .. } => "symlink",
    }
}

/// Temp names (`#ovlfs.*`) anywhere in the upper: a temp object renamed to the wrong place.
pub(crate) fn temp_names_in(upper: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![upper.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with("#ovlfs") {
                found.push(p.display().to_string());
            }
            if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                stack.push(p);
            }
        }
    }
    found
}
