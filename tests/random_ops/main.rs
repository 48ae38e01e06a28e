//! Seeded random-operation differential test: the same pseudo-random sequence of filesystem
//! operations runs on ovlfs and on the kernel's overlayfs (`redirect_dir=on,index=on,
//! metacopy=off`), both over identical (separately built) lower layers; every result / errno is
//! compared (names include the 255-byte maximum and a 256-byte one, xattrs include the
//! overlay's own `trusted.overlay.*` names, which both escape), the merged trees are compared
//! periodically and at the end, and then the uppers are
//! cross-mounted (each must read the upper the other wrote: docs/format.md, "Compatibility with
//! the kernel"):
//!
//! - (a) ovlfs remounted over its own upper (same workdir),
//! - (b) the kernel's overlayfs (plain options, fresh workdir; `redirect_dir=follow` when ovlfs
//!   wrote redirects) over the upper ovlfs wrote (as its top lower layer when ovlfs runs with
//!   `whiteout=xattr`),
//! - (c) ovlfs over the upper and workdir the kernel wrote (ovlfs reads the kernel's index),
//!
//! each compared with the kernel's final merged tree (where (c) differs, it is also compared with
//! the kernel's own view of its upper with a fresh workdir, which tells whether the difference
//! lies in the kernel's index). The lower layers must be unchanged (every byte, xattr, mode,
//! owner, time except atime). On a divergence the failing sequence is shrunk
//! (greedy delta debugging on fresh fixtures, bounded in time) and printed.
//!
//! Scale with `OVLFS_RANDOM_SEEDS` (default 20), `OVLFS_RANDOM_OPS` (ops per seed, default
//! 1500), `OVLFS_RANDOM_SEED` (first seed, default 1), `OVLFS_RANDOM_JOBS` (parallel seeds,
//! default 2), `OVLFS_RANDOM_CHECK_EVERY` (ops between full tree comparisons, default 50),
//! `OVLFS_RANDOM_SHRINK_SECS` (time budget per shrink, default 60), `OVLFS_RANDOM_SHRINK_MAX`
//! (how many failing seeds to shrink, default 3),
//! `OVLFS_RANDOM_OP_SECS` (per-operation watchdog, default 10), `OVLFS_RANDOM_OVLFS_OPTS`
//! (extra comma-separated `-o` options for ovlfs; with `metacopy=on` the kernel mounts get
//! `metacopy=on` too, and `OVLFS_RANDOM_IGNORE=mtime` looks past the one known difference:
//! the kernel's data copy-up of a metadata-only copy moves its mtime, docs/comparison.md), `OVLFS_RANDOM_NO_USERS=1` (run every
//! operation as root), `OVLFS_RANDOM_BUILD_FIXTURE=DIR` (only build the lowers in DIR, to
//! reproduce by hand), `OVLFS_RANDOM_REPLAY=SEED:I,J,...` (replay ops I, J, ... of SEED verbosely),
//! `OVLFS_RANDOM_DEBUG=1` (run the daemon with `-d`, show more of its stderr),
//! `OVLFS_RANDOM_IGNORE=...` (see `ignored`).
//!
//! Every operation is bounded by a watchdog that aborts the ovlfs FUSE connection (through the
//! harness's fusectl abort) when one takes longer than `OVLFS_RANDOM_OP_SECS`.
//!
//! Not compared (and why): atime (reads update it differently), ctime (not settable, differs by
//! construction), mtime values newer than the fixture's (wall-clock; only "recent vs old" and
//! exact old values are compared), st_ino values themselves (only their stability across
//! copy-up / rename for objects that came from a lower, and which paths share an inode),
//! st_dev, st_blocks / st_blksize, directory st_size and directory st_nlink.
//!
//! The code is split by concern into submodules in `tests/random_ops/`: `fixture` (the lower
//! layers), `ops` (the `Op` / `Step` types and how they are shown), `sys` (raw syscall helpers,
//! stat normalisation), `exec` (running one operation, as another user if asked), `repro` (the
//! Python reproducer), `generate` (generating operations), `snapshot` (merged-tree snapshots
//! with comparable mtimes, and the inode pairing; the snapshot itself and the layer snapshots
//! are the harness's, in `tests/common/snapshot.rs`), `watchdog` (the per-operation watchdog),
//! `run` (one run and its final checks) and `shrink`; this file keeps the configuration, the
//! PRNG, the replay mode and the test itself.

#[path = "../common/mod.rs"]
mod common;
mod exec;
mod fixture;
mod generate;
mod ops;
mod repro;
mod run;
mod shrink;
mod snapshot;
mod sys;
mod watchdog;

use common::*;
use exec::*;
use fixture::*;
use generate::*;
use ops::*;
use repro::*;
use run::*;
use shrink::*;
use snapshot::*;
use sys::*;
use watchdog::*;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const TEST: &str = "random_ops_differential";
/// Every fixture timestamp is at or after this, and every timestamp the ops set explicitly.
const FIXTURE_TIME: i64 = 1_000_000_000;
/// Timestamps before this are "old" (set by the fixture or by an explicit utimensat) and are
/// compared exactly; later ones are wall-clock and only compared as "recent".
const OLD_LIMIT: i64 = 1_500_000_000;
const KERNEL_OPTS: &[&str] = &["redirect_dir=on", "index=on", "metacopy=off"];

/// The kernel's options for the differential mount, and for the plain mounts over either
/// upper: with `OVLFS_RANDOM_OVLFS_OPTS=metacopy=on` both sides write metadata-only copies,
/// and the kernel needs the option to read the ones ovlfs wrote.
fn kernel_opts(cfg: &Cfg) -> (&'static [&'static str], &'static [&'static str]) {
    if cfg.ovlfs_opts.iter().any(|o| o == "metacopy=on") {
        (
            &["redirect_dir=on", "index=on", "metacopy=on"],
            &["metacopy=on"],
        )
    } else {
        (KERNEL_OPTS, &[])
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Cfg {
    seeds: u64,
    ops: usize,
    first_seed: u64,
    jobs: usize,
    check_every: usize,
    shrink_secs: u64,
    shrink_max: usize,
    op_timeout: Duration,
    ovlfs_opts: Vec<String>,
    users: bool,
}

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        _ => default,
    }
}

impl Cfg {
    fn from_env() -> Cfg {
        Cfg {
            seeds: env_num("OVLFS_RANDOM_SEEDS", 20),
            ops: env_num("OVLFS_RANDOM_OPS", 1500) as usize,
            first_seed: env_num("OVLFS_RANDOM_SEED", 1),
            jobs: env_num("OVLFS_RANDOM_JOBS", 2).max(1) as usize,
            check_every: env_num("OVLFS_RANDOM_CHECK_EVERY", 50).max(1) as usize,
            shrink_secs: env_num("OVLFS_RANDOM_SHRINK_SECS", 60),
            shrink_max: env_num("OVLFS_RANDOM_SHRINK_MAX", 3) as usize,
            op_timeout: Duration::from_secs(env_num("OVLFS_RANDOM_OP_SECS", 10).max(1)),
            ovlfs_opts: std::env::var("OVLFS_RANDOM_OVLFS_OPTS")
                .unwrap_or_default()
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            users: env_num("OVLFS_RANDOM_NO_USERS", 0) == 0,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PRNG (splitmix64)
// ---------------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut r = Rng(seed ^ 0x6a09_e667_f3bc_c909);
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }

    fn pct(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

/// `OVLFS_RANDOM_REPLAY=SEED:I,J,...`: regenerate the ops of SEED, replay ops I, J, ... of it on
/// fresh fixtures printing every result of both sides (and the trees after every op).
fn replay_verbose(cfg: &Cfg, spec: &str) {
    let (seed, idx) = spec
        .split_once(':')
        .unwrap_or_else(|| panic!("OVLFS_RANDOM_REPLAY={spec:?}: want SEED:I,J,..."));
    let seed: u64 = seed.trim().parse().expect("seed");
    let idx: Vec<usize> = idx
        .split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| x.trim().parse().expect("op index"))
        .collect();
    let n = idx.iter().max().map_or(0, |m| m + 1);
    let gen_run = run_sequence(cfg, Plan::Generate(seed, n));
    let steps: Vec<Step> =
        idx.iter()
            .map(|i| {
                gen_run.steps.get(*i).cloned().unwrap_or_else(|| {
                    panic!("seed {seed} stopped after {} ops", gen_run.steps.len())
                })
            })
            .collect();
    VERBOSE.store(true, Ordering::Relaxed);
    let r = run_sequence(cfg, Plan::Replay(steps.clone(), 0, true));
    VERBOSE.store(false, Ordering::Relaxed);
    visible(&python_repro(&steps));
    for f in &r.failures {
        visible(&format!("FAILURE {}: {}", f.kind.describe(), f.detail));
    }
    assert!(r.failures.is_empty(), "replay diverged");
}

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// One line per object of a layer: path, type, st_ino, nlink and overlay xattrs.
fn dump_layer(root: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![PathBuf::new()];
    let mut lines = Vec::new();
    while let Some(rel) = stack.pop() {
        let abs = root.join(&rel);
        let Ok(md) = fs::symlink_metadata(&abs) else {
            continue;
        };
        let mut l = format!(
            "      /{} {:?} ino={} nlink={} mode={:o} mtime={}",
            rel.display(),
            Kind::of(md.file_type()),
            md.ino(),
            md.nlink(),
            md.mode() & 0o7777,
            md.mtime()
        );
        if let Ok(names) = list_xattrs(&abs) {
            for n in names.iter().filter(|n| n.contains(".overlay.")) {
                let v = get_xattr(&abs, n).unwrap_or_default();
                l += &format!(" {n}={:?}", String::from_utf8_lossy(&v));
            }
        }
        lines.push(l);
        if md.is_dir()
            && let Ok(rd) = fs::read_dir(&abs)
        {
            for e in rd.flatten() {
                stack.push(rel.join(e.file_name()));
            }
        }
    }
    lines.sort();
    for l in lines {
        out += &l;
        out.push('\n');
    }
    out
}

struct SeedReport {
    seed: u64,
    outcome: RunOutcome,
}

#[test]
fn random_ops_differential() {
    if !require_kernel_overlay(TEST) {
        return;
    }
    if !Path::new("/dev/fuse").exists() {
        if in_ci() {
            panic!("{TEST}: /dev/fuse missing (CI=true)");
        }
        visible(&format!("SKIPPED: {TEST}: /dev/fuse missing"));
        return;
    }
    if let Some(dir) = std::env::var_os("OVLFS_RANDOM_BUILD_FIXTURE") {
        // Reproducing by hand: only build the lower layers (l1 = top) in DIR.
        let l = build_fixture(Path::new(&dir));
        visible(&format!("random_ops: fixture built: {l:?}"));
        return;
    }
    let cfg = Cfg::from_env();
    if let Ok(spec) = std::env::var("OVLFS_RANDOM_REPLAY") {
        replay_verbose(&cfg, &spec);
        return;
    }
    differential(cfg);
}

/// The same with ovlfs writing directory redirects (`redirect_dir=on`): fewer, other seeds
/// (2001 on; reproduce one with `OVLFS_RANDOM_OVLFS_OPTS=redirect_dir=on`). Stages (b) and (c)
/// check both on-disk directions. (Some seeds, 1004 and 6017 among them, meet a kernel side
/// effect whatever ovlfs's options: a directory rename the kernel refuses with ENOTEMPTY has
/// already copied up the source's parent, whose mtime then moves.)
#[test]
fn random_ops_redirect_dir() {
    if !require_kernel_overlay(TEST) || !Path::new("/dev/fuse").exists() {
        return;
    }
    let vars = ["OVLFS_RANDOM_BUILD_FIXTURE", "OVLFS_RANDOM_REPLAY"];
    if vars.iter().any(|v| std::env::var_os(v).is_some()) {
        return;
    }
    let mut cfg = Cfg::from_env();
    cfg.seeds = cfg.seeds.min(4);
    cfg.ops = cfg.ops.min(800);
    cfg.first_seed += 2000;
    cfg.ovlfs_opts.push("redirect_dir=on".into());
    differential(cfg);
}

/// Runs `cfg.seeds` sequences (in `cfg.jobs` threads), then shrinks and reports divergences.
fn differential(cfg: Cfg) {
    // SAFETY: plain syscall; both mounts see the same umask.
    unsafe { libc::umask(0o022) };
    visible(&format!(
        "random_ops: {} seed(s) from {} x {} ops, {} job(s), tree check every {} ops, ovlfs opts {:?}",
        cfg.seeds, cfg.first_seed, cfg.ops, cfg.jobs, cfg.check_every, cfg.ovlfs_opts
    ));
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let reports = Arc::new(Mutex::new(Vec::<SeedReport>::new()));
    let mut handles = Vec::new();
    for j in 0..cfg.jobs.min(cfg.seeds.max(1) as usize) {
        let (cfg, next, reports) = (cfg.clone(), next.clone(), reports.clone());
        handles.push(
            thread::Builder::new()
                .name(format!("random-ops-{j}"))
                .spawn(move || {
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if k >= cfg.seeds {
                            break;
                        }
                        let seed = cfg.first_seed + k;
                        let outcome = run_sequence(&cfg, Plan::Generate(seed, cfg.ops));
                        let status = match outcome.failures.first() {
                            None if outcome.notes.is_empty() => "ok".to_string(),
                            None => format!("ok; note: {}", outcome.notes.join("; ")),
                            Some(f) => format!(
                                "DIVERGENCE ({}{})",
                                f.kind.describe(),
                                f.at.map(|i| format!(" at op #{i}")).unwrap_or_default()
                            ),
                        };
                        visible(&format!(
                            "random_ops: seed {seed}: {} ops in {:.1} s: {status}",
                            outcome.steps.len(),
                            outcome.elapsed.as_secs_f64()
                        ));
                        reports
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(SeedReport { seed, outcome });
                    }
                })
                .expect("spawn worker"),
        );
    }
    for h in handles {
        if let Err(p) = h.join() {
            std::panic::resume_unwind(p);
        }
    }
    let mut reports = std::mem::take(&mut *reports.lock().unwrap_or_else(|p| p.into_inner()));
    reports.sort_by_key(|r| r.seed);
    let total_ops: usize = reports.iter().map(|r| r.outcome.steps.len()).sum();
    visible(&format!(
        "random_ops: {total_ops} ops over {} seed(s) in {:.1} s",
        reports.len(),
        started.elapsed().as_secs_f64()
    ));

    let failing: Vec<&SeedReport> = reports
        .iter()
        .filter(|r| !r.outcome.failures.is_empty())
        .collect();
    if failing.is_empty() {
        return;
    }
    let mut text = String::new();
    let mut shrunk = 0;
    for r in &failing {
        for f in &r.outcome.failures {
            text += &format!(
                "\n=== seed {} — {}{} ===\n{}\n",
                r.seed,
                f.kind.describe(),
                f.at.map(|i| format!(" at op #{i}")).unwrap_or_default(),
                f.detail
            );
        }
        // Shrink the first failure of each distinct kind.
        let f = &r.outcome.failures[0];
        if f.kind == FailKind::Setup || shrunk >= cfg.shrink_max {
            continue;
        }
        shrunk += 1;
        let seq = match f.at {
            Some(i) => r.outcome.steps[..=i].to_vec(),
            None => r.outcome.steps.clone(),
        };
        let t0 = Instant::now();
        let (min, runs, in_time) = shrink(
            &cfg,
            seq.clone(),
            &f.kind,
            Duration::from_secs(cfg.shrink_secs),
        );
        let mut s = format!(
            "\n--- seed {}: {}: shrunk {} -> {} op(s) in {:.1} s ({runs} replays{}) ---\n",
            r.seed,
            f.kind.describe(),
            seq.len(),
            min.len(),
            t0.elapsed().as_secs_f64(),
            if in_time {
                ""
            } else {
                ", time budget exhausted"
            }
        );
        if runs == 1 && min.len() == seq.len() {
            s += "(did not reproduce on a fresh replay: flaky or order-dependent)\n";
        }
        // The original indices (for OVLFS_RANDOM_REPLAY=SEED:I,J,...).
        let mut orig = Vec::new();
        let mut from = 0;
        for st in &min {
            if let Some(j) = (from..seq.len()).find(|j| seq[*j] == *st) {
                orig.push(j.to_string());
                from = j + 1;
            }
        }
        for (i, st) in min.iter().enumerate() {
            s += &format!("  #{i:<4} {st}\n");
        }
        s += &format!(
            "  replay with: OVLFS_RANDOM_REPLAY={}:{}\n",
            r.seed,
            orig.join(",")
        );

        // Show the failure of the minimal sequence.
        let again = run_sequence(&cfg, Plan::Replay(min.clone(), usize::MAX, true));
        if let Some(f2) = again.failures.iter().find(|x| x.kind == f.kind) {
            s += &format!("  minimal failure:\n{}\n", f2.detail);
        }
        visible(&format!(
            "{s}  as a Python script (run it in the root of each mount and diff the outputs):\n{}",
            python_repro(&min)
                .lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        ));
        text += &s;
    }
    panic!(
        "random_ops: {} of {} seed(s) diverged between ovlfs and the kernel's overlayfs:{text}",
        failing.len(),
        reports.len()
    );
}
