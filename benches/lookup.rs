//! Micro-bench of the lookup hot path (in-process, no FUSE): one name resolved in the root of
//! a stack of 1, 8, 64 and 500 lower layers.
//!
//! Cases, per depth N:
//! - `hit_top`: the name exists in the topmost lower only (one probe);
//! - `hit_bottom`: the name exists in the bottom layer only (N probes);
//! - `miss`: the name exists nowhere (N probes, each ENOENT plus the AUFS `.wh.` check);
//! - `whiteout`: a 0/0 character device in the top layer hides a file present in all others
//!   (one probe: the lookup stops at the first layer that decides);
//! - `merged_dir`: a directory present in every layer (N probes, N O_PATH fds, N opaque checks).
//!
//! The 500 layer directories are built once in a tempdir; a depth-N stack uses the first N.
//!
//! `node_table`: a FUSE LOOKUP of a file in a one-layer overlay (`Overlay::lookup`), without and
//! with the shared record a supervised worker keeps (`recorded`): `live` looks up a node the
//! kernel already holds (one more reference), `new_and_forget` makes a new node and forgets it.
//!
//! Run: `cargo bench --bench lookup` (add `-- --quick` for a short run).

use std::ffi::OsStr;
use std::fs;
use std::hint::black_box;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ovlfs::{LayerStack, XattrNamespace};

const DEPTHS: [usize; 4] = [1, 8, 64, 500];
const MAX_DEPTH: usize = 500;
/// Ordinary entries in every layer, so the directories are not trivially empty.
const FILLER: usize = 32;

/// Raises the soft fd limit: a 500-layer stack holds 500 root fds, and a merged directory
/// through all of them opens 500 more while it is resolved.
fn raise_nofile() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if let Some(max) = lim.maximum {
        let want = 8192.min(max);
        if lim.current.is_none_or(|c| c < want) {
            lim.current = Some(want);
            let _ = setrlimit(Resource::Nofile, lim);
        }
    }
}

/// Makes a 0/0 character device (an overlay whiteout). Needs root or Linux >= 5.8 unprivileged.
fn mknod_whiteout(path: &Path) -> bool {
    use rustix::fs::{CWD, FileType, Mode, mknodat};
    mknodat(
        CWD,
        path,
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o644),
        0,
    )
    .is_ok()
}

struct Layers {
    _tmp: tempfile::TempDir,
    dirs: Vec<PathBuf>,
    whiteouts: bool,
}

fn build_layers() -> Layers {
    let tmp = tempfile::Builder::new()
        .prefix("ovlfs-bench-lookup")
        .tempdir()
        .expect("tempdir");
    let mut dirs = Vec::with_capacity(MAX_DEPTH);
    for i in 0..MAX_DEPTH {
        let dir = tmp.path().join(format!("l{i:03}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..FILLER {
            fs::write(dir.join(format!("filler_{i}_{f}")), b"x").unwrap();
        }
        fs::create_dir(dir.join("merged_dir")).unwrap();
        dirs.push(dir);
    }
    fs::write(dirs[0].join("top"), b"top").unwrap();
    for depth in DEPTHS {
        fs::write(dirs[depth - 1].join(format!("bottom_{depth}")), b"bottom").unwrap();
    }
    // "hidden": a whiteout in the top layer, a regular file in every layer below it.
    let whiteouts = mknod_whiteout(&dirs[0].join("hidden"));
    for dir in &dirs[1..] {
        fs::write(dir.join("hidden"), b"hidden").unwrap();
    }
    Layers {
        _tmp: tmp,
        dirs,
        whiteouts,
    }
}

fn bench_lookup(c: &mut Criterion) {
    raise_nofile();
    let layers = build_layers();
    if !layers.whiteouts {
        eprintln!("lookup bench: cannot mknod a 0/0 chardev here; the whiteout case is skipped");
    }
    let mut group = c.benchmark_group("lookup");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for depth in DEPTHS {
        let stack = LayerStack::new(
            None,
            &layers.dirs[..depth],
            XattrNamespace::Trusted.origin_ino(),
        )
        .expect("layers");
        let parent_dirs: Vec<(usize, BorrowedFd<'_>)> = stack
            .layers
            .iter()
            .map(|l| (l.index, l.root_fd()))
            .collect();
        let bottom = format!("bottom_{depth}");
        let mut cases: Vec<(&str, &OsStr, bool)> = vec![
            ("hit_top", OsStr::new("top"), true),
            ("hit_bottom", OsStr::new(&bottom), true),
            ("miss", OsStr::new("absent"), false),
        ];
        if layers.whiteouts {
            // At depth 1 the whiteout has nothing below it; it still must resolve to nothing.
            cases.push(("whiteout", OsStr::new("hidden"), false));
        }
        cases.push(("merged_dir", OsStr::new("merged_dir"), true));
        for (case, name, exists) in cases {
            // Check the answer once, outside the timing, so the bench measures what it says.
            let got = ovlfs::lookup(&stack, &parent_dirs, name).expect("lookup");
            assert_eq!(got.is_some(), exists, "{case} at depth {depth}");
            if case == "merged_dir" {
                assert_eq!(got.unwrap().objects.iter().count(), depth);
            }
            group.bench_with_input(BenchmarkId::new(case, depth), &name, |b, name| {
                b.iter(|| {
                    black_box(
                        ovlfs::lookup(&stack, black_box(&parent_dirs), black_box(name)).unwrap(),
                    )
                })
            });
        }
    }
    group.finish();
}

/// The node table on the lookup path, with and without the supervisor's shared record.
fn bench_node_table(c: &mut Criterion) {
    let t = tempfile::tempdir().expect("tempdir");
    let (lower, mnt) = (t.path().join("lower"), t.path().join("m"));
    fs::create_dir_all(&lower).unwrap();
    fs::create_dir_all(&mnt).unwrap();
    for i in 0..1000 {
        fs::write(lower.join(format!("f{i}")), b"x").unwrap();
    }
    let args = [
        "-o".into(),
        format!("lowerdir={}", lower.display()),
        mnt.display().to_string(),
    ];
    let Ok(ovlfs::options::Action::Mount(config)) =
        ovlfs::options::parse_args(args.iter().map(Into::into))
    else {
        panic!("config");
    };
    let mut group = c.benchmark_group("node_table");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for recorded in [false, true] {
        let ov = ovlfs::Overlay::new(&config).expect("overlay");
        if recorded {
            ov.record_kernel_refs().expect("shared record");
        }
        let tag = if recorded { "recorded" } else { "plain" };
        let held = ov.lookup(ovlfs::ROOT_ID, OsStr::new("f0")).expect("lookup");
        group.bench_function(BenchmarkId::new("live", tag), |b| {
            b.iter(|| {
                black_box(
                    ov.lookup(ovlfs::ROOT_ID, black_box(OsStr::new("f0")))
                        .unwrap(),
                )
            })
        });
        ov.forget(held.id, u64::MAX);
        let names: Vec<String> = (1..1000).map(|i| format!("f{i}")).collect();
        let mut i = 0;
        group.bench_function(BenchmarkId::new("new_and_forget", tag), |b| {
            b.iter(|| {
                i = (i + 1) % names.len();
                let entry = ov.lookup(ovlfs::ROOT_ID, OsStr::new(&names[i])).unwrap();
                ov.forget(entry.id, 1);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_lookup, bench_node_table);
criterion_main!(benches);
