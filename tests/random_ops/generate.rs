//! Generating pseudo-random operations from a pool of paths.

use super::*;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

// ---------------------------------------------------------------------------------------------
// Generating operations from a pool of paths
// ---------------------------------------------------------------------------------------------

const NEW_NAMES: &[&str] = &["n0", "n1", "n2", "n3", "new.file"];
/// 255 and 256 bytes.
const LONG_NAMES: [&str; 2] = [
    "lllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllll",
    "LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL",
];
const XATTR_NAMES: &[&str] = &[
    "user.test",
    "user.a",
    "user.b",
    "user.dirx",
    "user.hl",
    "trusted.t1",
    "trusted.overlay.opaque",
    "trusted.overlay.foo",
];
/// An xattr name for an operation. `trusted.overlay.*` names are set, read and removed like
/// any other: both mounts store them escaped (`trusted.overlay.overlay.*`, docs/format.md).
/// `OVLFS_RANDOM_IGNORE=priv-xattr` leaves them out.
fn xattr_name(rng: &mut Rng, _write: bool) -> String {
    let mut n = *rng.pick(XATTR_NAMES);
    if ignored("priv-xattr") && n.starts_with("trusted.overlay.") {
        n = "user.a";
    }
    n.to_string()
}

/// A mode for open(O_CREAT) / mkdir.
fn create_mode(rng: &mut Rng) -> u32 {
    let m = *rng.pick(MODES);
    if ignored("create-suid") {
        m & 0o1777
    } else {
        m
    }
}

const MODES: &[u32] = &[
    0o644, 0o600, 0o755, 0o777, 0o700, 0o4755, 0o2775, 0o1777, 0o6777, 0o444, 0o000, 0o640,
];
const IDS: &[u32] = &[0, 1000, 1001, u32::MAX];

#[derive(Default)]
pub(crate) struct Pool {
    entries: Vec<(String, Kind)>,
    dirs: Vec<String>,
    names: Vec<String>,
}

impl Pool {
    pub(crate) fn scan(root: &Path) -> Pool {
        let mut p = Pool::default();
        let mut names = BTreeSet::new();
        let mut stack = vec![String::new()];
        while let Some(rel) = stack.pop() {
            p.dirs.push(rel.clone());
            let Ok(rd) = fs::read_dir(root.join(&rel)) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let crel = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                let Ok(md) = fs::symlink_metadata(root.join(&crel)) else {
                    continue;
                };
                let k = Kind::of(md.file_type());
                if k == Kind::Dir {
                    stack.push(crel.clone());
                }
                names.insert(name);
                p.entries.push((crel, k));
            }
        }
        p.entries.sort();
        p.dirs.sort();
        names.extend(NEW_NAMES.iter().map(|s| s.to_string()));
        p.names = names.into_iter().collect();
        p
    }

    fn new_path(&self, rng: &mut Rng) -> String {
        let d = rng.pick(&self.dirs).clone();
        let n = if rng.pct(3) {
            // The longest name a layer can hold, and one byte more (ENAMETOOLONG).
            LONG_NAMES[rng.below(2) as usize].to_string()
        } else if rng.pct(60) {
            rng.pick(NEW_NAMES).to_string()
        } else {
            rng.pick(&self.names).clone()
        };
        if d.is_empty() { n } else { format!("{d}/{n}") }
    }

    fn existing(&self, rng: &mut Rng) -> String {
        if self.entries.is_empty() {
            return self.new_path(rng);
        }
        rng.pick(&self.entries).0.clone()
    }

    fn any(&self, rng: &mut Rng) -> String {
        if rng.pct(70) {
            self.existing(rng)
        } else {
            self.new_path(rng)
        }
    }

    fn of_kind(&self, rng: &mut Rng, k: Kind, p: u64) -> String {
        if rng.pct(p) {
            let v: Vec<&String> = self
                .entries
                .iter()
                .filter(|e| e.1 == k)
                .map(|e| &e.0)
                .collect();
            if !v.is_empty() {
                return (*rng.pick(&v)).clone();
            }
        }
        self.any(rng)
    }

    fn kind(&self, path: &str) -> Option<Kind> {
        self.entries
            .binary_search_by(|e| e.0.as_str().cmp(path))
            .ok()
            .map(|i| self.entries[i].1)
    }
}

fn gen_len(rng: &mut Rng) -> usize {
    match rng.below(10) {
        0..=6 => rng.below(300) as usize,
        7 | 8 => rng.below(5000) as usize,
        _ => rng.below(70_000) as usize,
    }
}

fn gen_off(rng: &mut Rng) -> u64 {
    match rng.below(4) {
        0 => 0,
        1 => rng.below(64),
        2 => rng.below(5000),
        _ => rng.below(320_000),
    }
}

fn gen_time(rng: &mut Rng) -> T {
    match rng.below(5) {
        0 => T::Omit,
        1 => T::Now,
        _ => T::At(
            FIXTURE_TIME + 20_000_000 + rng.below(100_000_000) as i64,
            rng.below(1_000_000_000) as i64,
        ),
    }
}

pub(crate) fn gen_step(rng: &mut Rng, pool: &Pool, users: bool) -> Step {
    let who = if users && rng.pct(20) {
        if rng.pct(50) {
            Who::User(1000, 1000)
        } else {
            Who::User(1001, 1001)
        }
    } else {
        Who::Root
    };
    let ch = b'a' + rng.below(26) as u8;
    let weights: &[u64] = &[
        9, 5, 6, 4, 2, 2, 2, 8, 9, 4, 2, 6, 5, 3, 11, 4, 3, 4, 3, 3, 4, 2, 2, 2, 2,
    ];
    let total: u64 = weights.iter().sum();
    let mut r = rng.below(total);
    let mut which = 0;
    for (i, w) in weights.iter().enumerate() {
        if r < *w {
            which = i;
            break;
        }
        r -= w;
    }
    let op = match which {
        0 => Op::Create {
            p: if rng.pct(50) {
                pool.of_kind(rng, Kind::File, 70)
            } else {
                pool.new_path(rng)
            },
            mode: create_mode(rng),
            excl: rng.pct(20),
            len: gen_len(rng),
            ch,
            fsync: rng.pct(10),
        },
        1 => Op::Append {
            p: pool.of_kind(rng, Kind::File, 85),
            len: gen_len(rng),
            ch,
        },
        2 => Op::WriteAt {
            p: pool.of_kind(rng, Kind::File, 85),
            off: gen_off(rng),
            len: gen_len(rng).max(1),
            ch,
        },
        3 => Op::Truncate {
            p: pool.of_kind(rng, Kind::File, 85),
            len: gen_off(rng),
        },
        4 => Op::Ftruncate {
            p: pool.of_kind(rng, Kind::File, 85),
            len: gen_off(rng),
        },
        5 => Op::Fallocate {
            p: pool.of_kind(rng, Kind::File, 85),
            mode: *rng.pick(&[
                0,
                libc::FALLOC_FL_KEEP_SIZE,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            ]),
            off: gen_off(rng),
            len: 1 + rng.below(70_000),
        },
        6 if ignored("copy-range") => Op::Read {
            p: pool.of_kind(rng, Kind::File, 80),
        },
        6 => Op::CopyRange {
            src: pool.of_kind(rng, Kind::File, 85),
            dst: pool.of_kind(rng, Kind::File, 85),
            off_in: gen_off(rng),
            off_out: gen_off(rng),
            len: gen_len(rng).max(1),
        },
        7 => Op::Read {
            p: pool.of_kind(rng, Kind::File, 80),
        },
        8 => Op::Stat { p: pool.any(rng) },
        9 => Op::Readdir {
            p: pool.of_kind(rng, Kind::Dir, 80),
        },
        10 => Op::Readlink {
            p: pool.of_kind(rng, Kind::Symlink, 80),
        },
        11 => Op::Unlink { p: pool.any(rng) },
        12 => Op::Mkdir {
            p: pool.any(rng),
            mode: create_mode(rng),
        },
        13 => Op::Rmdir {
            p: pool.of_kind(rng, Kind::Dir, 80),
        },
        14 => {
            let src = if rng.pct(40) {
                pool.of_kind(rng, Kind::Dir, 100)
            } else {
                pool.any(rng)
            };
            let dst = match rng.below(20) {
                0 => format!("{src}/{}", rng.pick(NEW_NAMES)),
                1..=7 => pool.existing(rng),
                8..=10 => match pool.kind(&src) {
                    Some(k) => pool.of_kind(rng, k, 100),
                    None => pool.existing(rng),
                },
                _ => pool.new_path(rng),
            };
            let flags = match rng.below(20) {
                0..=12 => 0,
                13..=15 => libc::RENAME_NOREPLACE,
                _ if ignored("exchange") => 0,
                _ => libc::RENAME_EXCHANGE,
            };
            Op::Rename { src, dst, flags }
        }
        15 => Op::Link {
            src: if rng.pct(80) {
                pool.of_kind(rng, Kind::File, 90)
            } else {
                pool.any(rng)
            },
            dst: if rng.pct(80) {
                pool.new_path(rng)
            } else {
                pool.existing(rng)
            },
        },
        16 => {
            let p = pool.any(rng);
            let depth = p.matches('/').count();
            let target = match rng.below(10) {
                0 => "dangling/target".to_string(),
                1 => "x".repeat(200),
                _ => format!("{}{}", "../".repeat(depth), pool.any(rng)),
            };
            Op::Symlink { target, p }
        }
        17 => Op::Chmod {
            p: pool.any(rng),
            mode: *rng.pick(MODES),
        },
        18 => Op::Chown {
            p: pool.any(rng),
            uid: *rng.pick(IDS),
            gid: *rng.pick(IDS),
        },
        19 => Op::Utimens {
            p: pool.any(rng),
            atime: gen_time(rng),
            mtime: gen_time(rng),
        },
        20 => Op::SetXattr {
            p: pool.any(rng),
            name: xattr_name(rng, true),
            value: format!("v{}", rng.below(1000)),
            flags: *rng.pick(&[0, 0, libc::XATTR_CREATE, libc::XATTR_REPLACE]),
        },
        21 => Op::RemoveXattr {
            p: pool.any(rng),
            name: xattr_name(rng, true),
        },
        22 => Op::GetXattr {
            p: pool.any(rng),
            name: xattr_name(rng, false),
        },
        23 => Op::ListXattr { p: pool.any(rng) },
        _ => Op::Mknod {
            p: pool.any(rng),
            node: match rng.below(10) {
                0 => Node::Chr(0, 0),
                1 | 2 => Node::Chr(1, 3),
                _ => Node::Fifo,
            },
            mode: *rng.pick(&[0o644, 0o600, 0o666]),
        },
    };
    Step { who, op }
}
