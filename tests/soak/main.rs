//! Soak: four fsstress-style threads run random operations through the mount,
//! each in its own subtree (seeded from the lower layer, so copy-ups, whiteouts and directory
//! renames happen) checked against an in-memory model after every operation (content, size,
//! mode, xattrs, listings, symlink targets: a file just created must be there), plus racing
//! operations on shared names where only "lost race" errnos are tolerated; meanwhile an
//! fsx-style thread runs random writes, truncates, hole punches, reopens and reads (through
//! separate descriptors too) on one lower file against a byte model. No divergence, no hang
//! (watchdog), no daemon crash; the final trees are verified, then again after a remount, and
//! the lower layer must be unchanged. (Memory and the open-file limit: `limits.rs`.)
//!
//! CI: `cargo test --test soak` (30 s).
//! Long: `OVLFS_SOAK_SECS=600 cargo test --release --test soak -- --nocapture`
//! Other knobs: `OVLFS_SOAK_SEED` (default 1), `OVLFS_TEST_BIN`.

#[path = "../common/mod.rs"]
mod common;
mod fsx;

use common::rng::{Rng, env_u64};

use common::*;
use fsx::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// fsstress-style threads with a model of their own subtree
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum MNode {
    Dir {
        mode: u32,
    },
    File {
        data: Vec<u8>,
        mode: u32,
        xattr: Option<Vec<u8>>,
    },
    Link(PathBuf),
}

/// Relative path (inside the thread's subtree) → node.
type Model = BTreeMap<PathBuf, MNode>;

fn model_from_disk(root: &Path) -> Model {
    let mut m = Model::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).expect("read_dir") {
            let e = e.expect("entry");
            let crel = rel.join(e.file_name());
            let md = fs::symlink_metadata(e.path()).expect("lstat");
            let node = if md.is_dir() {
                stack.push(crel.clone());
                MNode::Dir {
                    mode: md.mode() & 0o7777,
                }
            } else if md.file_type().is_symlink() {
                MNode::Link(fs::read_link(e.path()).expect("readlink"))
            } else {
                MNode::File {
                    data: fs::read(e.path()).expect("read"),
                    mode: md.mode() & 0o7777,
                    xattr: get_xattr(&e.path(), "user.soak").ok(),
                }
            };
            m.insert(crel, node);
        }
    }
    m
}

fn children(m: &Model, dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = m
        .keys()
        .filter(|k| k.parent() == Some(dir))
        .map(|k| k.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn list(dir: &Path) -> io::Result<Vec<String>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        v.push(e?.file_name().to_string_lossy().into_owned());
    }
    v.sort();
    Ok(v)
}

/// Compares the whole subtree at `root` with the model; differences as text.
fn verify_tree(root: &Path, m: &Model) -> Vec<String> {
    let mut d = Vec::new();
    let mut actual = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        match fs::read_dir(root.join(&rel)) {
            Ok(rd) => {
                for e in rd {
                    match e {
                        Ok(e) => {
                            let crel = rel.join(e.file_name());
                            if fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_dir()) {
                                stack.push(crel.clone());
                            }
                            actual.push(crel);
                        }
                        Err(err) => d.push(format!("readdir /{}: {err}", rel.display())),
                    }
                }
            }
            Err(e) => d.push(format!("readdir /{}: {e}", rel.display())),
        }
    }
    actual.sort();
    let expected: Vec<PathBuf> = m.keys().cloned().collect();
    if actual != expected {
        let extra: Vec<_> = actual.iter().filter(|p| !m.contains_key(*p)).collect();
        let missing: Vec<_> = expected.iter().filter(|p| !actual.contains(p)).collect();
        d.push(format!(
            "entries differ: unexpected {extra:?}, missing {missing:?}"
        ));
    }
    for (rel, node) in m {
        let p = root.join(rel);
        let md = match fs::symlink_metadata(&p) {
            Ok(md) => md,
            Err(e) => {
                d.push(format!("/{}: lstat: {e}", rel.display()));
                continue;
            }
        };
        match node {
            MNode::Dir { mode } => {
                if !md.is_dir() || md.mode() & 0o7777 != *mode {
                    d.push(format!(
                        "/{}: dir mode {:o} expected {mode:o}",
                        rel.display(),
                        md.mode()
                    ));
                }
            }
            MNode::Link(t) => {
                if fs::read_link(&p).ok().as_ref() != Some(t) {
                    d.push(format!("/{}: symlink target differs", rel.display()));
                }
            }
            MNode::File { data, mode, xattr } => {
                let got = fs::read(&p);
                if got.as_ref().ok() != Some(data) {
                    d.push(format!(
                        "/{}: content differs ({:?} bytes, expected {})",
                        rel.display(),
                        got.map(|g| g.len()),
                        data.len()
                    ));
                }
                if md.mode() & 0o7777 != *mode {
                    d.push(format!(
                        "/{}: mode {:o} expected {mode:o}",
                        rel.display(),
                        md.mode() & 0o7777
                    ));
                }
                if get_xattr(&p, "user.soak").ok() != *xattr {
                    d.push(format!("/{}: user.soak xattr differs", rel.display()));
                }
            }
        }
    }
    d
}

struct Stresser {
    root: PathBuf,
    shared: PathBuf,
    model: Model,
    rng: Rng,
    log: Vec<String>,
    n: u64,
    tid: usize,
}

impl Stresser {
    fn pick(&mut self, want: impl Fn(&MNode) -> bool) -> Option<PathBuf> {
        let v: Vec<&PathBuf> = self
            .model
            .iter()
            .filter(|(_, n)| want(n))
            .map(|(k, _)| k)
            .collect();
        if v.is_empty() {
            None
        } else {
            Some(v[self.rng.below(v.len() as u64) as usize].clone())
        }
    }

    fn pick_dir(&mut self) -> PathBuf {
        // The subtree root (empty path) or a directory.
        if self.rng.below(3) == 0 {
            return PathBuf::new();
        }
        self.pick(|n| matches!(n, MNode::Dir { .. }))
            .unwrap_or_default()
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "soak thread {} diverged at operation {}: {what}\n  last operations:\n    {}",
            self.tid,
            self.n,
            self.log[self.log.len().saturating_sub(30)..].join("\n    ")
        );
    }

    fn check<T>(&self, what: &str, r: io::Result<T>) -> T {
        r.unwrap_or_else(|e| self.fail(format!("{what}: {e}")))
    }

    fn fresh_name(&mut self) -> String {
        format!("n{}_{}", self.tid, self.n)
    }

    /// One modelled operation; every result is checked.
    fn step(&mut self) {
        self.n += 1;
        let op = self.rng.below(18);
        match op {
            0 | 1 => {
                let dir = self.pick_dir();
                let rel = dir.join(self.fresh_name());
                let len = self.rng.below(20000) as usize;
                let data = self.rng.bytes(len);
                self.log
                    .push(format!("create {} ({len} bytes)", rel.display()));
                self.check("create", fs::write(self.root.join(&rel), &data));
                // Must be there at once, with its content.
                let back = self.check("read just-created file", fs::read(self.root.join(&rel)));
                if back != data {
                    self.fail(format!(
                        "just-created {} reads back differently",
                        rel.display()
                    ));
                }
                self.model.insert(
                    rel,
                    MNode::File {
                        data,
                        mode: 0o644,
                        xattr: None,
                    },
                );
            }
            2 | 3 => {
                let Some(rel) = self.pick(|n| matches!(n, MNode::File { .. })) else {
                    return;
                };
                let off = self.rng.below(30000);
                let len = self.rng.below(8000) as usize + 1;
                let buf = self.rng.bytes(len);
                self.log
                    .push(format!("pwrite {} @{off} +{len}", rel.display()));
                let f = self.check(
                    "open rw",
                    fs::OpenOptions::new()
                        .write(true)
                        .open(self.root.join(&rel)),
                );
                self.check("pwrite", f.write_all_at(&buf, off));
                drop(f);
                if let Some(MNode::File { data, .. }) = self.model.get_mut(&rel) {
                    let end = off as usize + len;
                    if data.len() < end {
                        data.resize(end, 0);
                    }
                    data[off as usize..end].copy_from_slice(&buf);
                }
            }
            4 => {
                let Some(rel) = self.pick(|n| matches!(n, MNode::File { .. })) else {
                    return;
                };
                let size = self.rng.below(25000);
                self.log.push(format!("truncate {} {size}", rel.display()));
                let f = self.check(
                    "open",
                    fs::OpenOptions::new()
                        .write(true)
                        .open(self.root.join(&rel)),
                );
                self.check("ftruncate", f.set_len(size));
                if let Some(MNode::File { data, .. }) = self.model.get_mut(&rel) {
                    data.resize(size as usize, 0);
                }
            }
            5 | 6 => {
                let Some(rel) = self.pick(|n| matches!(n, MNode::File { .. })) else {
                    return;
                };
                self.log.push(format!("read {}", rel.display()));
                let got = self.check("read", fs::read(self.root.join(&rel)));
                let md = self.check("stat", fs::metadata(self.root.join(&rel)));
                if let Some(MNode::File { data, mode, .. }) = self.model.get(&rel) {
                    if &got != data {
                        self.fail(format!(
                            "{}: read {} bytes, model has {} (first difference at {:?})",
                            rel.display(),
                            got.len(),
                            data.len(),
                            got.iter().zip(data.iter()).position(|(a, b)| a != b)
                        ));
                    }
                    if md.len() != data.len() as u64 || md.mode() & 0o7777 != *mode {
                        self.fail(format!(
                            "{}: stat size {} mode {:o}, model {} {mode:o}",
                            rel.display(),
                            md.len(),
                            md.mode() & 0o7777,
                            data.len()
                        ));
                    }
                }
            }
            7 => {
                let Some(rel) = self.pick(|n| !matches!(n, MNode::Dir { .. })) else {
                    return;
                };
                self.log.push(format!("unlink {}", rel.display()));
                self.check("unlink", fs::remove_file(self.root.join(&rel)));
                self.model.remove(&rel);
                if fs::symlink_metadata(self.root.join(&rel)).is_ok() {
                    self.fail(format!("{} still exists after unlink", rel.display()));
                }
            }
            8 => {
                let dir = self.pick_dir();
                let rel = dir.join(self.fresh_name());
                self.log.push(format!("mkdir {}", rel.display()));
                self.check("mkdir", fs::create_dir(self.root.join(&rel)));
                self.check(
                    "chmod",
                    fs::set_permissions(self.root.join(&rel), fs::Permissions::from_mode(0o755)),
                );
                self.model.insert(rel, MNode::Dir { mode: 0o755 });
            }
            9 => {
                // rmdir of an empty directory, or ENOTEMPTY of a non-empty one.
                let Some(rel) = self.pick(|n| matches!(n, MNode::Dir { .. })) else {
                    return;
                };
                let empty = children(&self.model, &rel).is_empty();
                self.log
                    .push(format!("rmdir {} (empty: {empty})", rel.display()));
                let r = fs::remove_dir(self.root.join(&rel));
                if empty {
                    self.check("rmdir", r);
                    self.model.remove(&rel);
                } else if errno(&r) != Some(libc::ENOTEMPTY) {
                    self.fail(format!("rmdir of non-empty {}: {r:?}", rel.display()));
                }
            }
            10 | 11 => {
                // rename a file or symlink (to a new name, or over another file).
                let Some(from) = self.pick(|n| !matches!(n, MNode::Dir { .. })) else {
                    return;
                };
                let to = if self.rng.below(2) == 0 {
                    self.pick(|n| matches!(n, MNode::File { .. }))
                        .unwrap_or_else(|| PathBuf::from("x"))
                } else {
                    let dir = self.pick_dir();
                    dir.join(self.fresh_name())
                };
                if from == to {
                    return;
                }
                self.log
                    .push(format!("rename {} -> {}", from.display(), to.display()));
                self.check(
                    "rename",
                    fs::rename(self.root.join(&from), self.root.join(&to)),
                );
                let node = self.model.remove(&from).expect("from");
                self.model.insert(to.clone(), node);
                if fs::symlink_metadata(self.root.join(&from)).is_ok() {
                    self.fail(format!("{} still exists after rename", from.display()));
                }
            }
            12 => {
                // rename a directory (a lower one copies its tree up) to a new name.
                let Some(from) = self.pick(|n| matches!(n, MNode::Dir { .. })) else {
                    return;
                };
                let dir = self.pick_dir();
                if dir.starts_with(&from) {
                    return;
                }
                let to = dir.join(self.fresh_name());
                self.log
                    .push(format!("rename dir {} -> {}", from.display(), to.display()));
                self.check(
                    "rename dir",
                    fs::rename(self.root.join(&from), self.root.join(&to)),
                );
                let keys: Vec<PathBuf> = self
                    .model
                    .keys()
                    .filter(|k| k.starts_with(&from))
                    .cloned()
                    .collect();
                for k in keys {
                    let v = self.model.remove(&k).expect("key");
                    let rest = k.strip_prefix(&from).expect("prefix").to_path_buf();
                    let nk = if rest.as_os_str().is_empty() {
                        to.clone()
                    } else {
                        to.join(rest)
                    };
                    self.model.insert(nk, v);
                }
            }
            13 => {
                let dir = self.pick_dir();
                let rel = dir.join(self.fresh_name());
                let target = PathBuf::from(format!("target/{}", self.n));
                self.log.push(format!("symlink {}", rel.display()));
                self.check(
                    "symlink",
                    std::os::unix::fs::symlink(&target, self.root.join(&rel)),
                );
                let t = self.check("readlink", fs::read_link(self.root.join(&rel)));
                if t != target {
                    self.fail(format!("readlink {} gave {t:?}", rel.display()));
                }
                self.model.insert(rel, MNode::Link(target));
            }
            14 => {
                let Some(rel) = self.pick(|n| matches!(n, MNode::File { .. })) else {
                    return;
                };
                let m = [0o600, 0o640, 0o644, 0o755, 0o700][self.rng.below(5) as usize];
                self.log.push(format!("chmod {} {m:o}", rel.display()));
                self.check(
                    "chmod",
                    fs::set_permissions(self.root.join(&rel), fs::Permissions::from_mode(m)),
                );
                if let Some(MNode::File { mode, .. }) = self.model.get_mut(&rel) {
                    *mode = m;
                }
            }
            15 => {
                let Some(rel) = self.pick(|n| matches!(n, MNode::File { .. })) else {
                    return;
                };
                let n = self.rng.below(200) as usize + 1;
                let v = self.rng.bytes(n);
                self.log.push(format!("setxattr {}", rel.display()));
                self.check(
                    "setxattr",
                    try_set_xattr(&self.root.join(&rel), "user.soak", &v),
                );
                let back = self.check("getxattr", get_xattr(&self.root.join(&rel), "user.soak"));
                if back != v {
                    self.fail(format!("getxattr {} after setxattr differs", rel.display()));
                }
                if let Some(MNode::File { xattr, .. }) = self.model.get_mut(&rel) {
                    *xattr = Some(v);
                }
            }
            16 => {
                let dir = self.pick_dir();
                self.log.push(format!("readdir {}", dir.display()));
                let got = self.check("readdir", list(&self.root.join(&dir)));
                let want = children(&self.model, &dir);
                if got != want {
                    self.fail(format!(
                        "readdir /{}: {got:?}, model {want:?}",
                        dir.display()
                    ));
                }
            }
            _ => self.shared_op(),
        }
    }

    /// Racing operations on shared names: only lost-race errnos are acceptable.
    fn shared_op(&mut self) {
        let a = self.shared.join(format!("s{}", self.rng.below(10)));
        let b = self.shared.join(format!("s{}", self.rng.below(10)));
        let r: io::Result<()> = match self.rng.below(9) {
            0 => fs::write(&a, b"shared"),
            1 => fs::remove_file(&a),
            2 => fs::rename(&a, &b),
            3 => fs::create_dir(&a),
            4 => fs::remove_dir(&a),
            5 => fs::hard_link(&a, &b),
            6 => fs::read_dir(&self.shared).map(|rd| {
                for e in rd.flatten() {
                    let _ = fs::symlink_metadata(e.path());
                }
            }),
            7 => fs::OpenOptions::new()
                .append(true)
                .open(&a)
                .and_then(|mut f| f.write_all(b"+")),
            _ => fs::read(&a).map(drop),
        };
        if let Err(e) = r {
            let ok = [
                libc::ENOENT,
                libc::EEXIST,
                libc::ENOTEMPTY,
                libc::ENOTDIR,
                libc::EISDIR,
                libc::EPERM, // link(2) of a directory
            ];
            if !e.raw_os_error().is_some_and(|c| ok.contains(&c)) {
                self.fail(format!("shared operation on {}: {e}", a.display()));
            }
        }
    }
}

/// Final models of the stress threads, the fsx model, and the operation counts.
type SoakResult = (Vec<Model>, Vec<u8>, Vec<u64>);

#[test]
fn soak_fsstress_and_fsx() {
    const TEST: &str = "soak_fsstress_and_fsx";
    if !require_root(TEST) {
        return;
    }
    let secs = env_u64("OVLFS_SOAK_SECS", 30);
    let seed = env_u64("OVLFS_SOAK_SEED", 1);
    let (_t, s) = scratch(&["lower", "upper", "work", "mnt"]);
    let lower = s.join("lower");
    let mut rng = Rng::new(seed);
    for t in 0..4 {
        for i in 0..10 {
            let n = rng.below(16384) as usize;
            write_file(&lower.join(format!("w{t}/f{i}")), rng.bytes(n));
        }
        for d in 0..2 {
            for i in 0..4 {
                let n = rng.below(4096) as usize;
                write_file(&lower.join(format!("w{t}/sub{d}/g{i}")), rng.bytes(n));
            }
        }
        symlink("f0", &lower.join(format!("w{t}/link")));
        set_xattr(&lower.join(format!("w{t}/f1")), "user.soak", b"lower");
    }
    for i in 0..5 {
        write_file(&lower.join(format!("shared/s{i}")), b"lower shared");
    }
    write_file(&lower.join("fsx.dat"), rng.bytes(256 << 10));
    let lower_before = snapshot_tree(&lower);
    let models: Vec<Model> = (0..4)
        .map(|t| model_from_disk(&lower.join(format!("w{t}"))))
        .collect();
    let fsx_model = fs::read(lower.join("fsx.dat")).expect("read fsx");

    let ov = Ovlfs::new([&lower]).upper(s.join("upper"), s.join("work"));
    let mnt = s.join("mnt");
    let m = ov.mount(&mnt);
    let pid = m.pid().expect("pid");
    let stop = Arc::new(AtomicBool::new(false));
    let mnt2 = mnt.clone();
    let stop2 = stop.clone();
    let results: Arc<Mutex<Option<SoakResult>>> = Arc::new(Mutex::new(None));
    let results2 = results.clone();
    with_watchdog(secs + 180, &mnt, move || {
        let mut hs = Vec::new();
        for (t, model) in models.into_iter().enumerate() {
            let (stop, mnt) = (stop2.clone(), mnt2.clone());
            hs.push(thread::spawn(move || {
                let mut st = Stresser {
                    root: mnt.join(format!("w{t}")),
                    shared: mnt.join("shared"),
                    model,
                    rng: Rng::new(seed * 100 + t as u64),
                    log: Vec::new(),
                    n: 0,
                    tid: t,
                };
                while !stop.load(Ordering::Relaxed) {
                    st.step();
                }
                (st.model, st.n)
            }));
        }
        let fsx = {
            let (stop, path) = (stop2.clone(), mnt2.join("fsx.dat"));
            thread::spawn(move || {
                let mut f = Fsx {
                    file: fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(&path)
                        .expect("open fsx.dat"),
                    reader: fs::File::open(&path).expect("open fsx reader"),
                    path,
                    model: fsx_model,
                    rng: Rng::new(seed * 7919),
                    log: Vec::new(),
                    ops: 0,
                };
                while !stop.load(Ordering::Relaxed) {
                    f.step();
                }
                f.check("final fsync", f.file.sync_all());
                (f.model, f.ops)
            })
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            thread::sleep(Duration::from_millis(250));
            assert!(process_alive(pid), "the daemon died during the soak");
            if hs.iter().any(|h| h.is_finished()) || fsx.is_finished() {
                break; // a worker failed: stop the others and report it
            }
        }
        stop2.store(true, Ordering::Relaxed);
        let mut models = Vec::new();
        let mut counts = Vec::new();
        let mut first_panic = None;
        for h in hs {
            match h.join() {
                Ok((m, n)) => {
                    models.push(m);
                    counts.push(n);
                }
                Err(p) => {
                    first_panic.get_or_insert(p);
                }
            }
        }
        let fsx_res = fsx.join();
        if let Some(p) = first_panic {
            std::panic::resume_unwind(p);
        }
        let (fsx_model, fsx_ops) = fsx_res.unwrap_or_else(|p| std::panic::resume_unwind(p));
        counts.push(fsx_ops);
        *results2.lock().unwrap_or_else(|e| e.into_inner()) = Some((models, fsx_model, counts));
    });
    drop(stop);
    let (models, fsx_model, counts) = results
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .expect("results");
    visible(&format!(
        "{TEST}: {secs} s: operations per stress thread {:?}, fsx operations {}",
        &counts[..4],
        counts[4]
    ));
    assert!(process_alive(pid), "the daemon died");
    let err = m.stderr();
    assert!(
        !err.contains("panicked"),
        "the daemon logged a panic:\n{err}"
    );
    let verify_all = |when: &str| {
        for (t, model) in models.iter().enumerate() {
            let d = verify_tree(&mnt.join(format!("w{t}")), model);
            assert!(
                d.is_empty(),
                "{when}: w{t} differs from its model:\n  {}",
                d.join("\n  ")
            );
        }
        let got = fs::read(mnt.join("fsx.dat")).expect("read fsx.dat");
        assert!(
            got == fsx_model,
            "{when}: fsx.dat differs from its model ({} vs {} bytes)",
            got.len(),
            fsx_model.len()
        );
    };
    verify_all("after the soak");
    drop(m);
    let m = ov.mount(&mnt);
    verify_all("after a remount");
    let stale = work_leftovers(&s.join("work/work"));
    assert!(
        stale.is_empty(),
        "WORKDIR/work after the remount: {stale:?}"
    );
    drop(m);
    assert_tree_unchanged("lower", &lower_before, &lower);
}
