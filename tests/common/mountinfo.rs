//! Reading /proc/self/mountinfo: which paths are mounted, and with which filesystem.

use super::*;

// ---------------------------------------------------------------------------------------------
// /proc/self/mountinfo
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct MountInfo {
    pub major: u32,
    pub minor: u32,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
    pub options: String,
}

pub fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

pub fn mountinfo() -> Vec<MountInfo> {
    mountinfo_of("self")
}

/// The mount table of process `pid` ("self" for ours): another mount namespace's, for instance.
pub fn mountinfo_of(pid: &str) -> Vec<MountInfo> {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/mountinfo")) else {
        return Vec::new();
    };
    let mut v = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 10 {
            continue;
        }
        let Some(sep) = f.iter().skip(6).position(|x| *x == "-").map(|p| p + 6) else {
            continue;
        };
        if sep + 2 >= f.len() {
            continue;
        }
        let (major, minor) = match f[2].split_once(':') {
            Some((a, b)) => (a.parse().unwrap_or(0), b.parse().unwrap_or(0)),
            None => (0, 0),
        };
        v.push(MountInfo {
            major,
            minor,
            mount_point: unescape_mountinfo(f[4]),
            fstype: f[sep + 1].to_string(),
            source: f[sep + 2].to_string(),
            options: f[5].to_string(),
        });
    }
    v
}

/// The topmost mount at exactly `path`, if any.
pub fn find_mount(path: &Path) -> Option<MountInfo> {
    mountinfo()
        .into_iter()
        .rev()
        .find(|m| m.mount_point == path)
}

/// The topmost FUSE mount (`fuse` or `fuse.*`) at exactly `path`, if any.
pub fn find_fuse_mount(path: &Path) -> Option<MountInfo> {
    mountinfo()
        .into_iter()
        .rev()
        .find(|m| m.mount_point == path && is_fuse_fstype(&m.fstype))
}

pub fn is_fuse_fstype(t: &str) -> bool {
    t == "fuse" || t.starts_with("fuse.")
}

pub fn is_fuse_mounted(path: &Path) -> bool {
    find_fuse_mount(path).is_some()
}

/// Canonical absolute form of a directory that must exist.
pub fn canon(p: &Path) -> PathBuf {
    fs::canonicalize(p).unwrap_or_else(|e| panic!("canonicalize {}: {e}", p.display()))
}
