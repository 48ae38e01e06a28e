//! Fixture builders for every on-disk whiteout and opaque format (parents are created as needed; failures panic with the path).

use super::*;

// ---------------------------------------------------------------------------------------------
// Fixture builders (parents are created as needed; failures panic with the path)
// ---------------------------------------------------------------------------------------------

pub fn parent_dirs(p: &Path) {
    if let Some(parent) = p.parent()
        && !parent.as_os_str().is_empty()
    {
        fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("create_dir_all {}: {e}", parent.display()));
    }
}

pub fn mkdirs(p: &Path) {
    fs::create_dir_all(p).unwrap_or_else(|e| panic!("create_dir_all {}: {e}", p.display()));
}

/// A directory with an exact mode (created if missing).
pub fn dir_mode(p: &Path, mode: u32) {
    mkdirs(p);
    chmod(p, mode);
}

pub fn write_file(p: &Path, content: impl AsRef<[u8]>) {
    parent_dirs(p);
    fs::write(p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// A regular file with owner and exact mode (mode applied after chown so setuid survives).
pub fn file_full(p: &Path, content: impl AsRef<[u8]>, mode: u32, uid: u32, gid: u32) {
    write_file(p, content);
    chown(p, uid, gid);
    chmod(p, mode);
}

pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, p.display()));
}

/// lchown.
pub fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("lchown {}: {e}", p.display()));
}

pub fn symlink(target: impl AsRef<Path>, p: &Path) {
    parent_dirs(p);
    std::os::unix::fs::symlink(target.as_ref(), p)
        .unwrap_or_else(|e| panic!("symlink {}: {e}", p.display()));
}

pub fn hardlink(existing: &Path, new: &Path) {
    parent_dirs(new);
    fs::hard_link(existing, new)
        .unwrap_or_else(|e| panic!("link {} -> {}: {e}", existing.display(), new.display()));
}

pub fn mknod(p: &Path, ft: rustix::fs::FileType, mode: u32, major: u32, minor: u32) {
    parent_dirs(p);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p,
        ft,
        rustix::fs::Mode::from_raw_mode(mode),
        rustix::fs::makedev(major, minor),
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", p.display()));
    // mknod honours the umask; make the mode exact.
    chmod(p, mode);
}

pub fn fifo(p: &Path) {
    mknod(p, rustix::fs::FileType::Fifo, 0o644, 0, 0);
}

pub fn chardev(p: &Path, major: u32, minor: u32) {
    mknod(
        p,
        rustix::fs::FileType::CharacterDevice,
        0o644,
        major,
        minor,
    );
}

/// A Unix socket file (bound, then the listener is closed; the inode stays).
pub fn socket(p: &Path) {
    parent_dirs(p);
    let l = std::os::unix::net::UnixListener::bind(p)
        .unwrap_or_else(|e| panic!("bind {}: {e}", p.display()));
    drop(l);
}

/// The xattr namespaces of overlay metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ns {
    Trusted,
    User,
}

impl Ns {
    /// `trusted.overlay.` / `user.overlay.`
    pub fn prefix(self) -> &'static str {
        match self {
            Ns::Trusted => "trusted.overlay.",
            Ns::User => "user.overlay.",
        }
    }

    pub fn xattr(self, name: &str) -> String {
        format!("{}{name}", self.prefix())
    }

    /// `NS.overlay.opaque=y` in this namespace.
    pub fn opaque_y(self) -> Opaque {
        match self {
            Ns::Trusted => Opaque::TrustedY,
            Ns::User => Opaque::UserY,
        }
    }

    /// `NS.overlay.opaque=x` ("may hold xattr whiteouts") in this namespace.
    pub fn opaque_x(self) -> Opaque {
        match self {
            Ns::Trusted => Opaque::TrustedX,
            Ns::User => Opaque::UserX,
        }
    }
}

/// A 0/0 character device whiteout.
pub fn whiteout_chardev(p: &Path) {
    mknod(p, rustix::fs::FileType::CharacterDevice, 0o600, 0, 0);
}

/// A zero-size regular file carrying `NS.overlay.whiteout` (value `y`).
pub fn whiteout_xattr(p: &Path, ns: Ns) {
    whiteout_xattr_value(p, ns, b"y");
}

pub fn whiteout_xattr_value(p: &Path, ns: Ns, value: &[u8]) {
    write_file(p, b"");
    set_xattr(p, &ns.xattr("whiteout"), value);
}

/// An AUFS whiteout `.wh.NAME` in `dir`.
pub fn whiteout_aufs(dir: &Path, name: &str) {
    write_file(&dir.join(format!(".wh.{name}")), b"");
}

/// The ways to mark a directory opaque (or, for the `*X` variants, "may hold xattr whiteouts").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opaque {
    /// `trusted.overlay.opaque=y`
    TrustedY,
    /// `user.overlay.opaque=y`
    UserY,
    /// `user.fuseoverlayfs.opaque=y`
    FuseOverlayfsY,
    /// a `.wh..wh..opq` entry inside
    WhOpq,
    /// `trusted.overlay.opaque=x` (not opaque)
    TrustedX,
    /// `user.overlay.opaque=x` (not opaque)
    UserX,
}

/// Mark (and create if needed) a directory.
pub fn opaque(dir: &Path, how: Opaque) {
    mkdirs(dir);
    match how {
        Opaque::TrustedY => set_xattr(dir, "trusted.overlay.opaque", b"y"),
        Opaque::UserY => set_xattr(dir, "user.overlay.opaque", b"y"),
        Opaque::FuseOverlayfsY => set_xattr(dir, "user.fuseoverlayfs.opaque", b"y"),
        Opaque::WhOpq => write_file(&dir.join(".wh..wh..opq"), b""),
        Opaque::TrustedX => set_xattr(dir, "trusted.overlay.opaque", b"x"),
        Opaque::UserX => set_xattr(dir, "user.overlay.opaque", b"x"),
    }
}

/// Set atime and mtime of `root` and everything below it (symlinks themselves, not followed)
/// to fixed values derived from `base` (so two independently built copies compare equal).
pub fn fix_times(root: &Path, base: i64) {
    let mut stack = vec![root.to_path_buf()];
    let mut all = Vec::new();
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        if md.is_dir() {
            for e in fs::read_dir(&p).unwrap_or_else(|e| panic!("read_dir {}: {e}", p.display())) {
                stack.push(e.expect("dir entry").path());
            }
        }
        all.push(p);
    }
    for p in &all {
        let rel = p.strip_prefix(root).unwrap_or(p);
        let h = fnv64(rel.as_os_str().as_bytes());
        let t = |s: i64| rustix::fs::Timespec {
            tv_sec: s,
            tv_nsec: (h % 1_000_000_000) as i64,
        };
        let ts = rustix::fs::Timestamps {
            last_access: t(base + 1_000_000),
            last_modification: t(base + (h % 100_000) as i64),
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            p,
            &ts,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
    }
}

/// A temp dir with the named subdirectories created; returns (guard, canonical root).
pub fn scratch(subdirs: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::Builder::new()
        .prefix("ovlfs-test-")
        .tempdir()
        .expect("tempdir");
    let root = canon(t.path());
    for s in subdirs {
        mkdirs(&root.join(s));
    }
    (t, root)
}

/// A file of `len` pseudo-random bytes from `rng` (parents created as needed).
pub fn write_random_file(path: &Path, len: u64, rng: &mut rng::Rng) {
    if let Some(p) = path.parent() {
        mkdirs(p);
    }
    let mut f = fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n])
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        left -= n as u64;
    }
}
