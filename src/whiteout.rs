//! The on-disk format (docs/format.md): detecting whiteouts and opaque directories in any layer,
//! and naming the overlay-private xattrs that must never show through the mount.

use std::ffi::{OsStr, OsString};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::sys::{self, Errno, Stat, SysResult};

/// AUFS whiteout prefix (`.wh.NAME` hides NAME in lower layers).
pub const AUFS_PREFIX: &[u8] = b".wh.";
/// AUFS opaque marker: a directory holding this entry hides all lower contents.
pub const AUFS_OPAQUE: &[u8] = b".wh..wh..opq";

/// The xattr namespace overlay metadata is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XattrNamespace {
    Trusted,
    User,
}

impl XattrNamespace {
    pub fn opaque(self) -> &'static str {
        match self {
            XattrNamespace::Trusted => "trusted.overlay.opaque",
            XattrNamespace::User => "user.overlay.opaque",
        }
    }

    /// Where ovlfs records the inode number an object had before copy-up (private to the
    /// overlay, hidden by the kernel too).
    pub fn origin_ino(self) -> &'static str {
        match self {
            XattrNamespace::Trusted => "trusted.overlay.ovlfs-ino",
            XattrNamespace::User => "user.overlay.ovlfs-ino",
        }
    }

    pub fn redirect(self) -> &'static str {
        match self {
            XattrNamespace::Trusted => "trusted.overlay.redirect",
            XattrNamespace::User => "user.overlay.redirect",
        }
    }

    pub fn whiteout(self) -> &'static str {
        match self {
            XattrNamespace::Trusted => "trusted.overlay.whiteout",
            XattrNamespace::User => "user.overlay.whiteout",
        }
    }

    /// Marks a regular file whose data lives in a lower layer (a metadata-only copy-up).
    pub fn metacopy(self) -> &'static str {
        match self {
            XattrNamespace::Trusted => "trusted.overlay.metacopy",
            XattrNamespace::User => "user.overlay.metacopy",
        }
    }
}

const WHITEOUT_XATTRS: [&str; 2] = ["trusted.overlay.whiteout", "user.overlay.whiteout"];
const OPAQUE_XATTRS: [&str; 3] = [
    "trusted.overlay.opaque",
    "user.overlay.opaque",
    "user.fuseoverlayfs.opaque",
];

/// The prefixes of the overlay's own xattrs, in both namespaces.
const OVERLAY_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];

/// Overlay-private xattrs as stored on disk: the overlay's own markers (never shown through
/// the mount) and fuse-overlayfs's. Escaped names (`NS.overlay.overlay.*`) are users' data,
/// not private.
pub fn is_private_xattr(name: &OsStr) -> bool {
    let name = name.as_bytes();
    name.starts_with(b"user.fuseoverlayfs.")
        || (OVERLAY_PREFIXES.iter().any(|p| name.starts_with(p)) && unescaped(name).is_none())
}

/// `NS.overlay.X` as a user of the mount names it is stored as `NS.overlay.overlay.X`, as the
/// kernel's overlayfs (≥ 6.7) does: an overlay whose layers live on this mount keeps its own
/// markers here without this mount taking them for its own.
pub fn escaped(name: &OsStr) -> Option<OsString> {
    let bytes = name.as_bytes();
    let prefix = OVERLAY_PREFIXES.iter().find(|p| bytes.starts_with(p))?;
    let mut out = prefix.to_vec();
    out.extend_from_slice(b"overlay.");
    out.extend_from_slice(&bytes[prefix.len()..]);
    Some(OsString::from_vec(out))
}

/// The name users of the mount see for a stored escaped name (`NS.overlay.overlay.X` →
/// `NS.overlay.X`), or `None` for any other name.
pub fn unescaped(stored: &[u8]) -> Option<OsString> {
    let prefix = OVERLAY_PREFIXES.iter().find(|p| stored.starts_with(p))?;
    let rest = stored[prefix.len()..].strip_prefix(b"overlay.")?;
    let mut out = prefix.to_vec();
    out.extend_from_slice(rest);
    Some(OsString::from_vec(out))
}

/// For an AUFS whiteout entry name `.wh.NAME`, the NAME it hides. The opaque marker and
/// `.wh.` alone hide nothing.
pub fn aufs_whiteout_target(name: &OsStr) -> Option<&OsStr> {
    let bytes = name.as_bytes();
    if bytes == AUFS_OPAQUE {
        return None;
    }
    bytes
        .strip_prefix(AUFS_PREFIX)
        .filter(|rest| !rest.is_empty())
        .map(OsStr::from_bytes)
}

/// Whether a directory entry name is overlay bookkeeping that never shows (AUFS entries).
pub fn is_aufs_entry(name: &OsStr) -> bool {
    name.as_bytes().starts_with(AUFS_PREFIX)
}

/// The AUFS whiteout name for `name`.
pub fn aufs_whiteout_name(name: &OsStr) -> std::ffi::OsString {
    let mut out = AUFS_PREFIX.to_vec();
    out.extend_from_slice(name.as_bytes());
    std::ffi::OsString::from(std::ffi::OsStr::from_bytes(&out))
}

fn is_chardev_whiteout(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

/// Could this stat be a whiteout? True for 0/0 char devices and zero-size regular files
/// (the latter still need [`has_whiteout_xattr`]).
pub fn may_be_whiteout(st: &Stat) -> bool {
    is_chardev_whiteout(st) || (st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_size == 0)
}

/// Whether an object (given by an fd, `O_PATH` is fine) carries an xattr whiteout tag.
pub fn has_whiteout_xattr(fd: BorrowedFd<'_>) -> bool {
    WHITEOUT_XATTRS
        .iter()
        .any(|name| matches!(sys::get_xattr(fd, name), Ok(Some(_))))
}

/// Whether `name` in `dir` (already stat'ed as `st`) is a whiteout of any format but AUFS.
pub fn is_whiteout_at(dir: BorrowedFd<'_>, name: &OsStr, st: &Stat) -> bool {
    if is_chardev_whiteout(st) {
        return true;
    }
    if !may_be_whiteout(st) {
        return false;
    }
    match sys::open_path_at(dir, name) {
        Ok(fd) => has_whiteout_xattr(std::os::fd::AsFd::as_fd(&fd)),
        Err(_) => false,
    }
}

/// What a layer directory's markers say about merging below it.
#[derive(Debug, Default)]
pub struct DirMarkers {
    /// Hides the same directory in the layers below.
    pub opaque: bool,
    /// `overlay.redirect`: where this directory's lower part lives (a kernel directory
    /// rename with redirect_dir=on): an absolute path from the layer roots, or a name in
    /// the same parent.
    pub redirect: Option<Vec<u8>>,
}

const REDIRECT_XATTRS: [&str; 2] = ["trusted.overlay.redirect", "user.overlay.redirect"];

/// Reads a layer directory's opaque and redirect markers with as few syscalls as it can.
/// `opaque=x` only means "may hold xattr whiteouts" and is not opaque.
pub fn dir_markers(dir: BorrowedFd<'_>) -> SysResult<DirMarkers> {
    let names = sys::list_xattr(dir)?;
    let has = |wanted: &str| names.iter().any(|n| n.as_bytes() == wanted.as_bytes());
    let mut markers = DirMarkers::default();
    for wanted in OPAQUE_XATTRS {
        if has(wanted) && matches!(sys::get_xattr(dir, wanted)?, Some(v) if v == b"y") {
            markers.opaque = true;
        }
    }
    for wanted in REDIRECT_XATTRS {
        if has(wanted) {
            markers.redirect = sys::get_xattr(dir, wanted)?;
        }
    }
    if !markers.opaque {
        markers.opaque = match sys::stat_at(dir, OsStr::from_bytes(AUFS_OPAQUE)) {
            Ok(_) => true,
            Err(sys::Errno::NOENT) => false,
            Err(e) => return Err(e),
        };
    }
    Ok(markers)
}

/// Records where a renamed directory's lower part lives (`redirect_dir=on`).
pub fn set_redirect(ns: XattrNamespace, dir: BorrowedFd<'_>, value: &[u8]) -> SysResult<()> {
    sys::set_xattr(dir, OsStr::new(ns.redirect()), value, 0)
}

pub fn is_opaque_dir(dir: BorrowedFd<'_>) -> SysResult<bool> {
    Ok(dir_markers(dir)?.opaque)
}

const METACOPY_XATTRS: [&str; 2] = ["trusted.overlay.metacopy", "user.overlay.metacopy"];

/// What a regular file's markers say about where its data lives.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Metacopy {
    /// `overlay.redirect`: the data file's path from the layer roots (absolute) or its name
    /// in the same parent; `None`: the same name in the parent's lower directories.
    pub redirect: Option<Vec<u8>>,
}

/// Whether a regular file may carry `overlay.metacopy`. A metadata-only copy holds no data:
/// its blocks are at most an xattr block or a few, so a file with more blocks than that that
/// cover its size holds its own data. That spares the xattr call on lookups of big files;
/// small ones are always checked (as the kernel checks every regular file).
pub fn may_be_metacopy(st: &Stat) -> bool {
    const XATTR_ROOM: u64 = 64 * 1024;
    let allocated = (st.st_blocks.max(0) as u64).saturating_mul(512);
    st.st_mode & libc::S_IFMT == libc::S_IFREG
        && (allocated <= XATTR_ROOM || allocated < st.st_size.max(0) as u64)
}

/// Reads a regular file's metacopy marker (either namespace), with its redirect if any.
/// `Ok(None)`: the file holds its own data.
pub fn metacopy_markers(file: BorrowedFd<'_>) -> SysResult<Option<Metacopy>> {
    let names = sys::list_xattr(file)?;
    let has = |wanted: &str| names.iter().any(|n| n.as_bytes() == wanted.as_bytes());
    if !METACOPY_XATTRS.iter().any(|n| has(n)) {
        return Ok(None);
    }
    let mut markers = Metacopy::default();
    for wanted in REDIRECT_XATTRS {
        if has(wanted) {
            markers.redirect = sys::get_xattr(file, wanted)?;
        }
    }
    Ok(Some(markers))
}

/// Removes the metacopy marker of both namespaces once the file holds its data.
pub fn clear_metacopy(file: BorrowedFd<'_>) -> SysResult<()> {
    for name in METACOPY_XATTRS {
        match sys::remove_xattr(file, OsStr::new(name)) {
            Ok(()) | Err(Errno::NODATA) | Err(Errno::OPNOTSUPP) | Err(Errno::PERM) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether an AUFS whiteout for `name` exists in `dir`.
pub fn has_aufs_whiteout(dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    sys::stat_at(dir, &aufs_whiteout_name(name)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aufs_names() {
        assert_eq!(
            aufs_whiteout_target(OsStr::new(".wh.foo")),
            Some(OsStr::new("foo"))
        );
        assert_eq!(aufs_whiteout_target(OsStr::new(".wh..wh..opq")), None);
        assert_eq!(aufs_whiteout_target(OsStr::new(".wh.")), None);
        assert_eq!(aufs_whiteout_target(OsStr::new("foo")), None);
        assert_eq!(aufs_whiteout_name(OsStr::new("x")), OsStr::new(".wh.x"));
    }

    #[test]
    fn metacopy_candidates() {
        let file = |size: i64, blocks: i64| {
            let mut st: Stat = rustix::fs::stat("/").expect("stat /");
            st.st_mode = libc::S_IFREG | 0o644;
            st.st_size = size;
            st.st_blocks = blocks;
            st
        };
        assert!(may_be_metacopy(&file(0, 0)));
        assert!(
            may_be_metacopy(&file(6, 8)),
            "a small file with an xattr block"
        );
        assert!(may_be_metacopy(&file(1 << 30, 8)), "a big one without data");
        assert!(may_be_metacopy(&file(1 << 30, 1 << 20)), "sparse");
        assert!(!may_be_metacopy(&file(1 << 20, 2056)), "holds its data");
        let mut dir = file(4096, 8);
        dir.st_mode = libc::S_IFDIR | 0o755;
        assert!(!may_be_metacopy(&dir));
    }

    #[test]
    fn private_xattrs() {
        assert!(is_private_xattr(OsStr::new("trusted.overlay.opaque")));
        assert!(is_private_xattr(OsStr::new("user.overlay.whiteout")));
        assert!(is_private_xattr(OsStr::new("user.fuseoverlayfs.opaque")));
        assert!(!is_private_xattr(OsStr::new("user.overlayx")));
        assert!(!is_private_xattr(OsStr::new("security.capability")));
        // Escaped names are users' data.
        assert!(!is_private_xattr(OsStr::new(
            "trusted.overlay.overlay.opaque"
        )));
        assert_eq!(
            escaped(OsStr::new("trusted.overlay.opaque")).unwrap(),
            "trusted.overlay.overlay.opaque"
        );
        assert_eq!(
            escaped(OsStr::new("user.overlay.overlay.x")).unwrap(),
            "user.overlay.overlay.overlay.x"
        );
        assert_eq!(
            unescaped(b"user.overlay.overlay.whiteout").unwrap(),
            "user.overlay.whiteout"
        );
        assert!(unescaped(b"user.overlay.whiteout").is_none());
        assert!(escaped(OsStr::new("user.fuseoverlayfs.opaque")).is_none());
    }
}

/// The forms a whiteout can be written in, most preferred first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutForm {
    Chardev,
    Xattr,
    Aufs,
}

/// Creates a whiteout object (chardev or xattr form) named `tmp` in `work`, to be renamed
/// into place by the caller. AUFS form is not built here: it is a separate name.
pub fn make_whiteout(
    form: WhiteoutForm,
    ns: XattrNamespace,
    work: BorrowedFd<'_>,
    tmp: &OsStr,
) -> SysResult<()> {
    match form {
        WhiteoutForm::Chardev => make_chardev_whiteout(work, tmp),
        WhiteoutForm::Xattr | WhiteoutForm::Aufs => {
            let flags =
                rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CREATE | rustix::fs::OFlags::EXCL;
            // Mode 0600: without CAP_DAC_OVERRIDE, setting and reading a user.* xattr need
            // write and read permission on the file.
            let file = sys::open_at(work, tmp, flags, 0o600)?;
            let fd = std::os::fd::AsFd::as_fd(&file);
            let set = sys::set_xattr(fd, OsStr::new(ns.whiteout()), b"y", 0);
            if let Err(e) = set {
                let _ = sys::unlink_at(work, tmp);
                return Err(e);
            }
            Ok(())
        }
    }
}

/// The 0/0 device kept in the workdir and hard-linked as each new whiteout, as the kernel's
/// overlayfs does: a deletion then allocates no inode. (Removed with the other temp objects
/// at mount; made again on first use.)
const SHARED_WHITEOUT: &str = "#ovlfs.whiteout";

fn make_chardev_whiteout(work: BorrowedFd<'_>, tmp: &OsStr) -> SysResult<()> {
    let shared = OsStr::new(SHARED_WHITEOUT);
    for _ in 0..3 {
        match sys::link_at(work, shared, work, tmp) {
            Ok(()) => return Ok(()),
            Err(Errno::NOENT) => match sys::mknod_at(work, shared, libc::S_IFCHR, 0) {
                Ok(()) | Err(Errno::EXIST) => continue,
                Err(e) => return Err(e),
            },
            // Link count exhausted: start a new shared inode.
            Err(Errno::MLINK) => {
                let _ = sys::unlink_at(work, shared);
            }
            // Hard links refused: a device per whiteout.
            Err(_) => break,
        }
    }
    sys::mknod_at(work, tmp, libc::S_IFCHR, 0)
}

/// Marks an upper directory as possibly holding xattr whiteouts (`opaque=x`) unless it is
/// already fully opaque: the kernel only honours xattr whiteouts in such directories.
pub fn mark_may_hold_xattr_whiteouts(ns: XattrNamespace, dir: BorrowedFd<'_>) -> SysResult<()> {
    match sys::get_xattr(dir, ns.opaque())? {
        Some(v) if v == b"y" || v == b"x" => Ok(()),
        _ => sys::set_xattr(dir, OsStr::new(ns.opaque()), b"x", 0),
    }
}

/// Marks an upper directory opaque: the same directory in lower layers is hidden.
/// On a filesystem without xattrs, the AUFS `.wh..wh..opq` marker is written instead.
pub fn set_opaque(ns: XattrNamespace, dir: BorrowedFd<'_>) -> SysResult<()> {
    match sys::set_xattr(dir, OsStr::new(ns.opaque()), b"y", 0) {
        Err(Errno::OPNOTSUPP) => {
            let flags = rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CREATE;
            sys::open_at(dir, OsStr::from_bytes(AUFS_OPAQUE), flags, 0o600).map(drop)
        }
        other => other,
    }
}

/// Deletes every whiteout entry (any format) directly inside an upper directory.
pub fn remove_whiteouts(dir: BorrowedFd<'_>) -> SysResult<()> {
    let listing = sys::reopen(
        dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
    )?;
    let listing = std::os::fd::AsFd::as_fd(&listing);
    for entry in sys::read_dir(listing)? {
        let whiteout = is_aufs_entry(&entry.name)
            || sys::stat_at(listing, &entry.name)
                .is_ok_and(|st| is_whiteout_at(listing, &entry.name, &st));
        if whiteout {
            sys::unlink_at(listing, &entry.name)?;
        }
    }
    Ok(())
}
