//! Micro-bench of copy-up (in-process, no FUSE): `Overlay::copy_up` of a lower file of 4 KiB,
//! 1 MiB and a 1 GiB sparse file (three 64 KiB data extents; the holes must be skipped).
//!
//! Two sites:
//! - `ext4`: the system's /tmp (no reflink here), so data moves with `copy_file_range`;
//! - `xfs-reflink`: a small XFS image (mkfs.xfs -m reflink=1) loop-mounted for the run, so the
//!   copy is a FICLONE. Needs root and xfsprogs; skipped with a message otherwise. The mount is
//!   undone by a guard, also when the bench panics.
//!
//! Every iteration copies up into a fresh upper/work pair (copy-up of an upper node is a
//! no-op), built by the untimed setup of `iter_batched`; the timed part is `copy_up` alone,
//! including the fsync ovlfs does before the rename (the default, as without `fsync=0`).
//!
//! Run: `cargo bench --bench copy_up` (add `-- --quick` for a short run).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::hint::black_box;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use ovlfs::options::{Action, parse_args};
use ovlfs::{Node, Overlay, ROOT_ID};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// (bench id, file name in the lower, size, sparse)
const FILES: [(&str, &str, u64, bool); 3] = [
    ("4KiB", "f4k", 4 * KIB, false),
    ("1MiB", "f1m", MIB, false),
    ("1GiB-sparse", "sparse1g", GIB, true),
];

/// Deterministic non-zero bytes (so no filesystem can store them as holes or compress them).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x as u8) | 1
        })
        .collect()
}

fn write_lower(lower: &Path) {
    fs::create_dir_all(lower).unwrap();
    for (i, (_, name, size, sparse)) in FILES.iter().enumerate() {
        let mut f = fs::File::create(lower.join(name)).unwrap();
        if *sparse {
            f.set_len(*size).unwrap();
            let chunk = pattern(64 * KIB as usize, i as u64);
            for at in [0, *size / 2, *size - 64 * KIB] {
                f.seek(SeekFrom::Start(at)).unwrap();
                f.write_all(&chunk).unwrap();
            }
        } else {
            f.write_all(&pattern(*size as usize, i as u64)).unwrap();
        }
        f.sync_all().unwrap();
    }
}

/// A place with a lower layer where fresh upper/work pairs are made.
struct Site {
    label: &'static str,
    base: PathBuf,
    lower: PathBuf,
    mountpoint: PathBuf,
}

impl Site {
    fn new(label: &'static str, base: &Path) -> Site {
        let lower = base.join("lower");
        let mountpoint = base.join("mnt");
        write_lower(&lower);
        fs::create_dir_all(&mountpoint).unwrap();
        Site {
            label,
            base: base.to_owned(),
            lower,
            mountpoint,
        }
    }

    /// A new overlay with an empty upper, and the node of `name` (still in the lower).
    fn fresh(&self, name: &str) -> (Overlay, Arc<Node>, tempfile::TempDir) {
        let run = tempfile::Builder::new()
            .prefix("run")
            .tempdir_in(&self.base)
            .unwrap();
        let upper = run.path().join("upper");
        let work = run.path().join("work");
        fs::create_dir(&upper).unwrap();
        fs::create_dir(&work).unwrap();
        let mut opts = OsString::from("lowerdir=");
        opts.push(&self.lower);
        opts.push(",upperdir=");
        opts.push(&upper);
        opts.push(",workdir=");
        opts.push(&work);
        let args = [OsString::from("-o"), opts, self.mountpoint.clone().into()];
        let config = match parse_args(args).expect("options") {
            Action::Mount(config) => config,
            other => panic!("unexpected {other:?}"),
        };
        let ov = Overlay::new(&config).expect("overlay");
        ov.attach_workdir(&work).expect("workdir");
        let entry = ov.lookup(ROOT_ID, OsStr::new(name)).expect("lookup");
        let node = ov.node(entry.id).expect("node");
        (ov, node, run)
    }
}

/// A loop-mounted XFS image with reflink; unmounted (and its loop device freed) on drop.
struct LoopMount {
    mountpoint: PathBuf,
    mounted: bool,
    // Dropped after the unmount: holds the image and the mountpoint.
    _dir: tempfile::TempDir,
}

impl LoopMount {
    fn xfs() -> Result<LoopMount, String> {
        if rustix::process::geteuid().as_raw() != 0 {
            return Err("not root".into());
        }
        let dir = tempfile::Builder::new()
            .prefix("ovlfs-bench-xfs")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let image = dir.path().join("xfs.img");
        let mountpoint = dir.path().join("mnt");
        fs::create_dir(&mountpoint).map_err(|e| e.to_string())?;
        // Sparse image: only what the bench writes takes space.
        fs::File::create(&image)
            .and_then(|f| f.set_len(4 * GIB))
            .map_err(|e| e.to_string())?;
        let mkfs = Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(&image)
            .status()
            .map_err(|e| format!("mkfs.xfs: {e} (apt-get install -y xfsprogs)"))?;
        if !mkfs.success() {
            return Err(format!("mkfs.xfs failed: {mkfs}"));
        }
        let mount = Command::new("mount")
            .args(["-t", "xfs", "-o", "loop"])
            .arg(&image)
            .arg(&mountpoint)
            .status()
            .map_err(|e| format!("mount: {e}"))?;
        if !mount.success() {
            return Err(format!("mount -o loop failed: {mount}"));
        }
        Ok(LoopMount {
            mountpoint,
            mounted: true,
            _dir: dir,
        })
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        // The loop device was set up by mount(8) with autoclear: umount frees it.
        let ok = Command::new("umount")
            .arg(&self.mountpoint)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .status();
        }
        self.mounted = false;
    }
}

/// Copies up once outside the timing and checks the copy is complete and holes stayed holes.
fn check(site: &Site, name: &str, size: u64) {
    use std::os::unix::fs::MetadataExt;
    let (ov, node, run) = site.fresh(name);
    ov.copy_up(&node).expect("copy_up");
    let copied = run.path().join("upper").join(name);
    let meta = fs::metadata(&copied).expect("copied file");
    assert_eq!(meta.len(), size, "{}: size of {name}", site.label);
    if size >= GIB {
        assert!(
            meta.blocks() * 512 < 16 * MIB,
            "{}: the sparse file was filled in",
            site.label
        );
    } else {
        let original = fs::read(site.lower.join(name)).unwrap();
        assert!(
            fs::read(&copied).unwrap() == original,
            "{}: {name} differs",
            site.label
        );
    }
}

fn bench_site(c: &mut Criterion, site: &Site) {
    let mut group = c.benchmark_group(format!("copy_up/{}", site.label));
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3));
    for (id, name, size, _) in FILES {
        check(site, name, size);
        group.bench_function(BenchmarkId::from_parameter(id), |b| {
            b.iter_batched(
                || site.fresh(name),
                |(ov, node, run)| {
                    ov.copy_up(black_box(&node)).unwrap();
                    // Dropped after the timing: the overlay, then the run directory.
                    (ov, node, run)
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn bench_copy_up(c: &mut Criterion) {
    let ext4_dir = tempfile::Builder::new()
        .prefix("ovlfs-bench-copyup")
        .tempdir()
        .expect("tempdir");
    let ext4 = Site::new("ext4", ext4_dir.path());
    bench_site(c, &ext4);
    drop(ext4);
    drop(ext4_dir);

    // `cargo test --all-targets` runs benches once as tests (without `--bench`): no loop
    // mounts there.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("copy_up bench: test mode, xfs-reflink variant skipped");
        return;
    }
    match LoopMount::xfs() {
        Ok(mount) => {
            let site = Site::new("xfs-reflink", &mount.mountpoint.join("site"));
            bench_site(c, &site);
            drop(site);
            drop(mount);
        }
        Err(why) => eprintln!("copy_up bench: xfs-reflink variant skipped: {why}"),
    }
}

criterion_group!(benches, bench_copy_up);
criterion_main!(benches);
