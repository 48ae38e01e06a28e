//! Owners and modes kept in an xattr instead of the real ones (fuse-overlayfs's
//! `xattr_permissions=` and containers/storage's `force_mask`).
//!
//! Rootless storage on filesystems that cannot hold other users' ids, or storage shared under
//! a restrictive `force_mask`, keeps each directory's and regular file's real owner and mode
//! as `UID:GID:MODE[:TYPE]` (decimal ids, octal mode) in one of three xattrs. A layer uses one
//! of them when its root carries it; the upper uses the one `xattr_permissions=` names. The
//! ids are on-disk ids: the uid/gid mapping applies on top, as for real owners.

use std::ffi::OsStr;
use std::os::fd::BorrowedFd;

use crate::config::XattrPermissions;
use crate::sys::{self, Stat, SysResult};

/// Which xattr a layer keeps owners and modes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatXattr {
    /// `security.fuseoverlayfs.override_stat` (`xattr_permissions=1`).
    Privileged,
    /// `user.fuseoverlayfs.override_stat` (what fuse-overlayfs 1.10 writes for `=2`).
    User,
    /// `user.containers.override_stat` (containers/storage's own name; `=2`).
    Containers,
}

const ALL: [StatXattr; 3] = [
    StatXattr::Privileged,
    StatXattr::User,
    StatXattr::Containers,
];

/// The permission bits the upper's real objects get when their mode lives in the xattr: the
/// daemon (their real owner) can use them, nobody else on the host can.
pub const REAL_PERM: u32 = 0o700;

impl StatXattr {
    pub fn name(self) -> &'static OsStr {
        OsStr::new(match self {
            StatXattr::Privileged => "security.fuseoverlayfs.override_stat",
            StatXattr::User => "user.fuseoverlayfs.override_stat",
            StatXattr::Containers => "user.containers.override_stat",
        })
    }

    /// The xattr a layer root announces, in fuse-overlayfs's order of preference.
    pub fn of_layer_root(root: BorrowedFd<'_>) -> Option<StatXattr> {
        ALL.into_iter()
            .find(|x| sys::get_xattr_raw(root, x.name(), 0).is_ok())
    }

    /// The xattr the upper writes for `option`, given its root.
    pub fn for_upper(option: XattrPermissions, root: BorrowedFd<'_>) -> Option<StatXattr> {
        match option {
            XattrPermissions::Off => StatXattr::of_layer_root(root),
            XattrPermissions::Privileged => Some(StatXattr::Privileged),
            // An upper that fuse-overlayfs 1.10 wrote keeps its name.
            XattrPermissions::User => {
                if sys::get_xattr_raw(root, StatXattr::User.name(), 0).is_ok() {
                    Some(StatXattr::User)
                } else {
                    Some(StatXattr::Containers)
                }
            }
        }
    }
}

/// Whether `name` is one of the override xattrs.
pub fn is_stat_xattr(name: &OsStr) -> bool {
    ALL.iter().any(|x| x.name() == name)
}

/// Whether objects of this type keep their owner and mode in the xattr (as in
/// fuse-overlayfs: symlinks and special files keep real ones).
pub fn applies_to(st_mode: u32) -> bool {
    matches!(st_mode & libc::S_IFMT, libc::S_IFDIR | libc::S_IFREG)
}

/// An owner and mode read from, or to be written to, the xattr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits with setuid, setgid and sticky (`0o7777`).
    pub perm: u32,
    /// A fourth field (containers/storage's file type), kept as it is on rewrites.
    pub rest: Option<String>,
}

impl Override {
    /// Parses `UID:GID:MODE[:TYPE]`; the mode may carry file type bits, which are dropped.
    pub fn parse(value: &[u8]) -> Option<Override> {
        let text = std::str::from_utf8(value).ok()?;
        let text = text.trim_end_matches(['\0', '\n']);
        let mut fields = text.splitn(4, ':');
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        let mode = u32::from_str_radix(fields.next()?, 8).ok()?;
        Some(Override {
            uid,
            gid,
            perm: mode & 0o7777,
            rest: fields.next().map(str::to_owned),
        })
    }

    /// `UID:GID:0MODE[:TYPE]`: readable by fuse-overlayfs and containers/storage alike.
    pub fn format(&self) -> String {
        match &self.rest {
            Some(rest) => format!("{}:{}:0{:o}:{rest}", self.uid, self.gid, self.perm),
            None => format!("{}:{}:0{:o}", self.uid, self.gid, self.perm),
        }
    }

    /// What `st` shows with this override.
    pub fn apply(&self, st: &mut Stat) {
        st.st_uid = self.uid;
        st.st_gid = self.gid;
        st.st_mode = (st.st_mode & libc::S_IFMT) | self.perm;
    }

    /// The override describing what `st` shows now.
    pub fn of_stat(st: &Stat) -> Override {
        Override {
            uid: st.st_uid,
            gid: st.st_gid,
            perm: st.st_mode & 0o7777,
            rest: None,
        }
    }
}

/// The override stored on the object behind `fd`, if any. A missing or unreadable value
/// means the real owner and mode stand, as in fuse-overlayfs.
pub fn read(fd: BorrowedFd<'_>, xattr: StatXattr) -> Option<Override> {
    let value = sys::get_xattr_raw(fd, xattr.name(), 256).ok()?;
    let parsed = Override::parse(&value);
    if parsed.is_none() {
        log::debug!("unreadable {:?} value {value:?}", xattr.name());
    }
    parsed
}

/// Stores `value` on the object behind `fd`.
pub fn write(fd: BorrowedFd<'_>, xattr: StatXattr, value: &Override) -> SysResult<()> {
    sys::set_xattr(fd, xattr.name(), value.format().as_bytes(), 0)
}

/// Applies the override stored on the object behind `fd` (of a layer using `xattr`) to `st`.
pub fn apply_stored(fd: BorrowedFd<'_>, xattr: Option<StatXattr>, st: &mut Stat) {
    if let Some(x) = xattr
        && applies_to(st.st_mode)
        && let Some(o) = read(fd, x)
    {
        o.apply(st);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_written_form() {
        let o = Override::parse(b"1000:100:755").unwrap();
        assert_eq!((o.uid, o.gid, o.perm, o.rest), (1000, 100, 0o755, None));
        // Type bits in the mode (fuse-overlayfs writes st_mode as it is) are dropped.
        assert_eq!(Override::parse(b"0:0:40755").unwrap().perm, 0o755);
        assert_eq!(Override::parse(b"0:0:0100644").unwrap().perm, 0o644);
        // containers/storage's four-field form; the type is kept for rewrites.
        let o = Override::parse(b"0:0:04755:file").unwrap();
        assert_eq!((o.perm, o.rest.as_deref()), (0o4755, Some("file")));
        assert_eq!(o.format(), "0:0:04755:file");
        for bad in [&b""[..], b"1:2", b"a:2:755", b"1:2:9", b"-1:0:755"] {
            assert!(Override::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn format_round_trips() {
        let o = Override {
            uid: 7,
            gid: 8,
            perm: 0o2750,
            rest: None,
        };
        assert_eq!(o.format(), "7:8:02750");
        assert_eq!(Override::parse(o.format().as_bytes()), Some(o));
    }
}
