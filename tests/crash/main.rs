//! Crash safety (copy-up through the workdir: docs/design.md, "Copy-up"): the daemon is SIGKILLed
//! at random points while a worker thread runs copy-ups of a large lower file (by appending to it),
//! renames of lower files, deletions of lower files and directories (whiteout creation) and renames
//! of lower directories (whole-tree copy-up). After every kill the dead mount is cleaned up
//! (`fusermount3 -u`, else `umount -l`), ovlfs is mounted again on the same upper/work, and the
//! merged tree must be exactly the state before or after the operation that was in flight: every
//! completed operation is there in full, the in-flight one is either absent or complete, every
//! file's content is the lower content (plus the appended bytes if the append completed), metadata
//! and xattrs are the lower ones, no whiteout exists without its deletion, and `WORKDIR/work` holds
//! no temp object after the remount. The remaining operations are then finished through the new
//! mount and the final tree is checked again (the post-crash upper must stay fully usable).
//!
//! Each iteration targets one kind of operation (it runs first, and the kill lands at a random
//! moment within its calibrated duration), cycling through all kinds; a calibration run without
//! a kill first validates the model against the daemon.
//!
//! CI (default): `cargo test --test crash` — 16 kills with a 64 MiB file (chardev whiteouts),
//! plus 10 kills with `whiteout=xattr` and 8 with `whiteout=auto` (renames targeted most often).
//! Long: `OVLFS_CRASH_ITERS=120 OVLFS_CRASH_XATTR_ITERS=60 OVLFS_CRASH_BIG_MIB=1024
//!        cargo test --release --test crash -- --nocapture`
//! Other knobs: `OVLFS_CRASH_SEED` (PRNG seed, default 6), `OVLFS_TEST_BIN` (binary under test).

#[path = "../common/mod.rs"]
mod common;
mod model;

use common::rng::{Rng, env_u64};

use common::*;
use model::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------------------

/// Compares `merged` with the content of `lower` followed by `appended`; `None` when equal.
fn compare_content(merged: &Path, lower: &Path, appended: &[u8]) -> Option<String> {
    let mut m = match fs::File::open(merged) {
        Ok(f) => f,
        Err(e) => return Some(format!("open: {e}")),
    };
    let mut l = fs::File::open(lower).unwrap_or_else(|e| panic!("open {}: {e}", lower.display()));
    let mut bm = vec![0u8; 1 << 20];
    let mut bl = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let nl = read_full(&mut l, &mut bl).expect("read lower");
        if nl == 0 {
            break;
        }
        let nm = match read_full(&mut m, &mut bm[..nl]) {
            Ok(n) => n,
            Err(e) => return Some(format!("read at {off}: {e}")),
        };
        if nm != nl {
            return Some(format!(
                "short: {} bytes instead of at least {}",
                off + nm as u64,
                off + nl as u64
            ));
        }
        if bm[..nm] != bl[..nl] {
            let first = bm[..nm]
                .iter()
                .zip(&bl[..nl])
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Some(format!(
                "content differs from the lower file at offset {}",
                off + first as u64
            ));
        }
        off += nl as u64;
    }
    let mut tail = Vec::new();
    if let Err(e) = m.read_to_end(&mut tail) {
        return Some(format!("read tail at {off}: {e}"));
    }
    if tail != appended {
        return Some(format!(
            "after the lower content ({off} bytes): {} bytes, expected the {} appended bytes{}",
            tail.len(),
            appended.len(),
            if tail.len() == appended.len() {
                " (different bytes)"
            } else {
                ""
            }
        ));
    }
    None
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Removes everything inside `dir` (not following symlinks), keeping `dir`.
fn clear_dir(dir: &Path) {
    for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display())) {
        let p = e.expect("dir entry").path();
        let md = fs::symlink_metadata(&p).expect("lstat");
        if md.is_dir() {
            fs::remove_dir_all(&p).unwrap_or_else(|e| panic!("rm -r {}: {e}", p.display()));
        } else {
            fs::remove_file(&p).unwrap_or_else(|e| panic!("rm {}: {e}", p.display()));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fixture and plans
// ---------------------------------------------------------------------------------------------

const SMALL_FILES: usize = 24;
const DEL_FILES: usize = 24;
const TREES: usize = 4;

struct Fixture {
    _t: tempfile::TempDir,
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
}

fn build_fixture(big_mib: u64, rng: &mut Rng) -> Fixture {
    let (t, root) = scratch(&["lower", "upper", "work", "mnt"]);
    let lower = root.join("lower");
    write_random_file(&lower.join("big"), big_mib << 20, rng);
    for i in 0..SMALL_FILES {
        let p = lower.join(format!("files/s{i:02}"));
        write_random_file(&p, if i % 2 == 0 { 4 << 10 } else { 128 << 10 }, rng);
        chmod(&p, [0o644, 0o600, 0o755, 0o640][i % 4]);
        if i % 3 == 0 {
            chown(&p, 1000, 1000);
        }
        if i % 2 == 0 {
            set_xattr(&p, "user.idx", format!("s{i}").as_bytes());
        }
    }
    for i in 0..DEL_FILES {
        write_random_file(&lower.join(format!("del/d{i:02}")), 4096, rng);
    }
    for t in 0..TREES {
        let base = lower.join(format!("trees/t{t}"));
        for (j, sub) in ["a", "b", "c/deep/er"].iter().enumerate() {
            let d = base.join(sub);
            mkdirs(&d);
            for f in 0..12 {
                let p = d.join(format!("f{f:02}"));
                write_random_file(&p, 8192 + (f as u64) * 512, rng);
                if f % 4 == 0 {
                    set_xattr(&p, "user.tag", format!("t{t}{sub}{f}").as_bytes());
                }
                if f % 5 == 0 {
                    chmod(&p, 0o600);
                    chown(&p, 1001, 1001);
                }
            }
            set_xattr(&d, "user.dir", sub.as_bytes());
            chmod(&d, [0o755, 0o750, 0o700][j]);
        }
        symlink("a/f00", &base.join("ln"));
        chown(&base.join("b"), 1000, 100);
    }
    mkdirs(&lower.join("dst"));
    write_random_file(&lower.join("dst/keep"), 100, rng);
    Fixture {
        lower,
        upper: root.join("upper"),
        work: root.join("work"),
        mnt: root.join("mnt"),
        _t: t,
    }
}

/// Operation kinds; each iteration targets one.
const CATEGORIES: [&str; 4] = [
    "copy-up of the large file",
    "renames of lower files",
    "deletions (whiteouts)",
    "renames of lower directories (tree copy-up)",
];

fn steps_for(cat: usize, rng: &mut Rng, iter: usize) -> Vec<Step> {
    let mut s = Vec::new();
    match cat {
        0 => {
            let mut data = vec![0u8; 4096];
            rng.fill(&mut data);
            data[..16].copy_from_slice(format!("iter{iter:012}").as_bytes());
            s.push(Step::Append {
                path: "big".into(),
                data,
            });
        }
        1 => {
            let mut idx: Vec<usize> = (0..SMALL_FILES).collect();
            rng.shuffle(&mut idx);
            for (n, i) in idx.into_iter().take(16).enumerate() {
                let from = PathBuf::from(format!("files/s{i:02}"));
                if n % 3 != 2 {
                    // Already in the upper: the rename itself (with its whiteout) is the step.
                    s.push(Step::CopyUp(from.clone()));
                }
                let to = if n % 2 == 0 {
                    PathBuf::from(format!("dst/s{i:02}.moved"))
                } else {
                    PathBuf::from(format!("files/r{i:02}"))
                };
                s.push(Step::Rename { from, to });
            }
        }
        2 => {
            let mut idx: Vec<usize> = (0..DEL_FILES).collect();
            rng.shuffle(&mut idx);
            for i in idx.into_iter().take(16) {
                s.push(Step::Unlink(format!("del/d{i:02}").into()));
            }
            // rm -r of a whole lower tree: files, then directories bottom-up.
            let t = PathBuf::from("trees/t3");
            for sub in ["a", "b", "c/deep/er"] {
                for f in 0..12 {
                    s.push(Step::Unlink(t.join(sub).join(format!("f{f:02}"))));
                }
            }
            s.push(Step::Unlink(t.join("ln")));
            for d in ["a", "b", "c/deep/er", "c/deep", "c", ""] {
                s.push(Step::Rmdir(if d.is_empty() {
                    t.clone()
                } else {
                    t.join(d)
                }));
            }
        }
        3 => {
            s.push(Step::Rename {
                from: "trees/t0".into(),
                to: "dst/t0".into(),
            });
            s.push(Step::Rename {
                from: "trees/t1".into(),
                to: "trees/t1.renamed".into(),
            });
            s.push(Step::Rename {
                from: "trees/t2/c".into(),
                to: "dst/c2".into(),
            });
        }
        _ => unreachable!(),
    }
    s
}

/// The target category's steps first, then every other category in random order.
/// Returns the plan and the index where the target's steps end.
fn plan(target: usize, cats: &[usize], rng: &mut Rng, iter: usize) -> (Vec<Step>, usize) {
    let mut steps = steps_for(target, rng, iter);
    let target_end = steps.len();
    let mut others: Vec<usize> = cats.iter().copied().filter(|c| *c != target).collect();
    rng.shuffle(&mut others);
    for c in others {
        steps.extend(steps_for(c, rng, iter));
    }
    (steps, target_end)
}

// ---------------------------------------------------------------------------------------------
// The campaign
// ---------------------------------------------------------------------------------------------

struct WorkerResult {
    /// (step index, error, whether the kill had already been requested)
    error: Option<(usize, io::Error, bool)>,
}

/// Runs `steps` on a worker thread; returns (done counter, kill flag, receiver of the result).
fn start_worker(
    mnt: &Path,
    steps: Arc<Vec<Step>>,
) -> (
    Arc<AtomicUsize>,
    Arc<AtomicBool>,
    mpsc::Receiver<WorkerResult>,
) {
    let done = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let (d, k, mnt) = (done.clone(), killed.clone(), mnt.to_path_buf());
    thread::Builder::new()
        .name("crash-worker".into())
        .spawn(move || {
            let mut error = None;
            for (i, s) in steps.iter().enumerate() {
                match s.run(&mnt) {
                    Ok(()) => {
                        d.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        error = Some((i, e, k.load(Ordering::SeqCst)));
                        break;
                    }
                }
            }
            let _ = tx.send(WorkerResult { error });
        })
        .expect("spawn worker");
    (done, killed, rx)
}

/// `cats`: the operation kinds in every plan; `rotation`: the kinds targeted, in turn.
fn campaign(test: &str, options: &[&str], cats: &[usize], rotation: &[usize], iters: u64) {
    if !require_root(test) {
        return;
    }
    let seed = env_u64("OVLFS_CRASH_SEED", 6);
    let big_mib = env_u64("OVLFS_CRASH_BIG_MIB", 64);
    let mut rng = Rng::new(seed ^ fnv64(test.as_bytes()));
    visible(&format!(
        "{test}: seed {seed}, {iters} kills, {big_mib} MiB file, options {options:?}"
    ));
    let t0 = Instant::now();
    let fx = build_fixture(big_mib, &mut rng);
    let base = model_of_lower(&fx.lower);
    let lower_before = snapshot_tree(&fx.lower);
    let mut ov = Ovlfs::new([&fx.lower]).upper(&fx.upper, &fx.work);
    for o in options {
        ov = ov.opt(o);
    }
    let reset = || {
        clear_dir(&fx.upper);
        clear_dir(&fx.work);
    };
    let ctx = |iter: &str| format!("{test} (seed {seed}, iteration {iter})");

    // Calibration: each category without a kill must give exactly the model's state.
    let mut cal = [Duration::from_millis(50); 4];
    for &c in cats {
        let m = ov.mount(&fx.mnt);
        let steps = steps_for(c, &mut rng, 0);
        let st = Instant::now();
        for s in &steps {
            s.run(&fx.mnt)
                .unwrap_or_else(|e| panic!("{}: {} failed: {e}", ctx("calibration"), s.describe()));
        }
        cal[c] = st.elapsed().max(Duration::from_millis(5));
        let mut model = base.clone();
        for s in &steps {
            s.apply(&mut model);
        }
        let d = verify(&fx.mnt, &fx.lower, &model);
        assert!(
            d.is_empty(),
            "{}: after {} (no kill) the merged tree differs from the model:\n  {}",
            ctx("calibration"),
            CATEGORIES[c],
            d.join("\n  ")
        );
        drop(m);
        reset();
    }
    visible(&format!(
        "{test}: calibrated durations: {}",
        cats.iter()
            .map(|c| format!("{} {:?}", CATEGORIES[*c], cal[*c]))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let mut mid_workload = 0;
    let mut leftovers_seen = 0;
    let mut in_flight_completed = 0;
    for iter in 1..=iters {
        let target = rotation[(iter as usize - 1) % rotation.len()];
        let (steps, target_end) = plan(target, cats, &mut rng, iter as usize);
        let steps = Arc::new(steps);
        let window = cal[target].as_micros() as u64 * 6 / 5;
        let delay = Duration::from_micros(rng.below(window.max(1)));
        let c = ctx(&iter.to_string());

        let mut m = ov.mount(&fx.mnt);
        let (done, killed, rx) = start_worker(&fx.mnt, steps.clone());
        thread::sleep(delay);
        killed.store(true, Ordering::SeqCst);
        m.signal(rustix::process::Signal::KILL)
            .unwrap_or_else(|e| panic!("{c}: SIGKILL: {e}"));
        assert!(
            m.wait_exit(EXIT_TIMEOUT).is_some(),
            "{c}: the daemon did not die on SIGKILL"
        );
        let result = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{c}: the worker hung after the daemon was killed"));
        let k = done.load(Ordering::SeqCst);
        if let Some((i, e, false)) = &result.error {
            panic!(
                "{c}: step {i} ({}) failed before the kill: {e}",
                steps[*i].describe()
            );
        }
        drop(m); // cleans up the dead mount
        if k < steps.len() {
            mid_workload += 1;
        }
        let stale = work_leftovers(&fx.work.join("work"));
        if !stale.is_empty() {
            leftovers_seen += 1;
        }

        let m2 = ov.mount(&fx.mnt);
        let after = work_leftovers(&fx.work.join("work"));
        assert!(
            after.is_empty(),
            "{c}: WORKDIR/work still holds {after:?} after the remount (before it: {stale:?})"
        );
        let misplaced = temp_names_in(&fx.upper);
        assert!(
            misplaced.is_empty(),
            "{c}: temp objects inside the upper layer: {misplaced:?}"
        );
        let mut model = base.clone();
        for s in &steps[..k] {
            s.apply(&mut model);
        }
        let d_old = verify(&fx.mnt, &fx.lower, &model);
        let resumed_at = if d_old.is_empty() {
            k
        } else {
            let d_new = if k < steps.len() {
                let mut m_new = model.clone();
                steps[k].apply(&mut m_new);
                let d = verify(&fx.mnt, &fx.lower, &m_new);
                if d.is_empty() {
                    model = m_new;
                }
                d
            } else {
                vec!["(no step was in flight)".into()]
            };
            if !d_new.is_empty() {
                let in_flight = steps
                    .get(k)
                    .map(|s| s.describe())
                    .unwrap_or_else(|| "none".into());
                panic!(
                    "{c}: killed after {delay:?} during {}: {k} of {} steps completed, in flight: \
                     {in_flight}. The merged tree after the remount is neither the old nor the \
                     new state.\n  versus the state before the in-flight step:\n    {}\n  versus \
                     the state after it:\n    {}",
                    CATEGORIES[target],
                    steps.len(),
                    d_old
                        .iter()
                        .take(15)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n    "),
                    d_new
                        .iter()
                        .take(15)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n    ")
                );
            }
            in_flight_completed += 1;
            k + 1
        };
        // The post-crash upper must stay usable: finish the plan through the new mount.
        for s in &steps[resumed_at..] {
            s.run(&fx.mnt)
                .unwrap_or_else(|e| panic!("{c}: after the remount, {} failed: {e}", s.describe()));
            s.apply(&mut model);
        }
        let d = verify(&fx.mnt, &fx.lower, &model);
        assert!(
            d.is_empty(),
            "{c}: after finishing the plan on the remounted overlay the tree differs:\n  {}",
            d.join("\n  ")
        );
        drop(m2);
        if iter <= 3 || iter % 10 == 0 {
            visible(&format!(
                "{test}: iteration {iter}: target {}, kill after {delay:?}, {k}/{} steps \
                 ({target_end} targeted) done, {} stale temp object(s) before remount",
                CATEGORIES[target],
                steps.len(),
                stale.len()
            ));
        }
        reset();
    }
    assert_tree_unchanged("lower", &lower_before, &fx.lower);
    visible(&format!(
        "{test}: {iters} kills in {:?}: {mid_workload} landed mid-workload, {in_flight_completed} \
         in-flight steps found complete, stale temp objects before the remount in \
         {leftovers_seen} iteration(s)",
        t0.elapsed()
    ));
    assert!(
        mid_workload * 2 >= iters as usize,
        "{test}: only {mid_workload} of {iters} kills landed while the workload ran: the test \
         is not exercising crashes (calibration off?)"
    );
}

#[test]
fn crash_kill_during_copy_up_rename_whiteout_and_tree_copy_up() {
    let iters = env_u64("OVLFS_CRASH_ITERS", 16);
    campaign(
        "crash_chardev_whiteouts",
        &[],
        &[0, 1, 2, 3],
        &[0, 1, 2, 3],
        iters,
    );
}

#[test]
fn crash_kill_with_xattr_whiteouts() {
    let iters = env_u64("OVLFS_CRASH_XATTR_ITERS", 10);
    campaign(
        "crash_xattr_whiteouts",
        &["whiteout=xattr"],
        &[1, 2, 3],
        &[1, 1, 2, 1, 3],
        iters,
    );
}

#[test]
fn crash_kill_with_auto_whiteouts() {
    let iters = env_u64("OVLFS_CRASH_XATTR_ITERS", 8);
    campaign(
        "crash_auto_whiteouts",
        &["whiteout=auto"],
        &[1, 2, 3],
        &[1, 2, 1, 3],
        iters,
    );
}
