//! Operations: the `Op` / `Step` types and how they are shown.

use std::fmt;

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Who {
    Root,
    User(u32, u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum T {
    Omit,
    Now,
    At(i64, i64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    Fifo,
    Chr(u32, u32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// open(O_WRONLY|O_CREAT|O_TRUNC[|O_EXCL], mode), write `len` × `ch`, optionally fsync.
    Create {
        p: String,
        mode: u32,
        excl: bool,
        len: usize,
        ch: u8,
        fsync: bool,
    },
    Append {
        p: String,
        len: usize,
        ch: u8,
    },
    WriteAt {
        p: String,
        off: u64,
        len: usize,
        ch: u8,
    },
    /// truncate(2) by path.
    Truncate {
        p: String,
        len: u64,
    },
    Ftruncate {
        p: String,
        len: u64,
    },
    Fallocate {
        p: String,
        mode: i32,
        off: u64,
        len: u64,
    },
    CopyRange {
        src: String,
        dst: String,
        off_in: u64,
        off_out: u64,
        len: usize,
    },
    Read {
        p: String,
    },
    Stat {
        p: String,
    },
    Readdir {
        p: String,
    },
    Readlink {
        p: String,
    },
    Unlink {
        p: String,
    },
    Mkdir {
        p: String,
        mode: u32,
    },
    Rmdir {
        p: String,
    },
    Rename {
        src: String,
        dst: String,
        flags: u32,
    },
    Link {
        src: String,
        dst: String,
    },
    Symlink {
        target: String,
        p: String,
    },
    Chmod {
        p: String,
        mode: u32,
    },
    Chown {
        p: String,
        uid: u32,
        gid: u32,
    },
    Utimens {
        p: String,
        atime: T,
        mtime: T,
    },
    SetXattr {
        p: String,
        name: String,
        value: String,
        flags: i32,
    },
    RemoveXattr {
        p: String,
        name: String,
    },
    GetXattr {
        p: String,
        name: String,
    },
    ListXattr {
        p: String,
    },
    Mknod {
        p: String,
        node: Node,
        mode: u32,
    },
}

impl Op {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Op::Create { .. } => "create",
            Op::Append { .. } => "append",
            Op::WriteAt { .. } => "write_at",
            Op::Truncate { .. } => "truncate",
            Op::Ftruncate { .. } => "ftruncate",
            Op::Fallocate { .. } => "fallocate",
            Op::CopyRange { .. } => "copy_file_range",
            Op::Read { .. } => "read",
            Op::Stat { .. } => "stat",
            Op::Readdir { .. } => "readdir",
            Op::Readlink { .. } => "readlink",
            Op::Unlink { .. } => "unlink",
            Op::Mkdir { .. } => "mkdir",
            Op::Rmdir { .. } => "rmdir",
            Op::Rename { .. } => "rename",
            Op::Link { .. } => "link",
            Op::Symlink { .. } => "symlink",
            Op::Chmod { .. } => "chmod",
            Op::Chown { .. } => "chown",
            Op::Utimens { .. } => "utimensat",
            Op::SetXattr { .. } => "setxattr",
            Op::RemoveXattr { .. } => "removexattr",
            Op::GetXattr { .. } => "getxattr",
            Op::ListXattr { .. } => "listxattr",
            Op::Mknod { .. } => "mknod",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) who: Who,
    pub(crate) op: Op,
}

fn show_t(t: &T) -> String {
    match t {
        T::Omit => "UTIME_OMIT".into(),
        T::Now => "UTIME_NOW".into(),
        T::At(s, n) => format!("{s}.{n:09}"),
    }
}

fn show_rename_flags(f: u32) -> &'static str {
    match f {
        0 => "0",
        libc::RENAME_NOREPLACE => "RENAME_NOREPLACE",
        libc::RENAME_EXCHANGE => "RENAME_EXCHANGE",
        _ => "?",
    }
}

fn show_xattr_flags(f: i32) -> &'static str {
    match f {
        0 => "0",
        libc::XATTR_CREATE => "XATTR_CREATE",
        libc::XATTR_REPLACE => "XATTR_REPLACE",
        _ => "?",
    }
}

/// C-like notation; every path is relative to the mount root; nothing follows symlinks.
impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Who::User(u, g) = self.who {
            write!(f, "[as {u}:{g}] ")?;
        }
        match &self.op {
            Op::Create {
                p,
                mode,
                excl,
                len,
                ch,
                fsync,
            } => write!(
                f,
                "open({p:?}, O_WRONLY|O_CREAT|O_TRUNC{}, {mode:#o}); write({len} x {:?}){}",
                if *excl { "|O_EXCL" } else { "" },
                *ch as char,
                if *fsync { "; fsync" } else { "" }
            ),
            Op::Append { p, len, ch } => {
                write!(
                    f,
                    "open({p:?}, O_WRONLY|O_APPEND); write({len} x {:?})",
                    *ch as char
                )
            }
            Op::WriteAt { p, off, len, ch } => {
                write!(
                    f,
                    "open({p:?}, O_WRONLY); pwrite({len} x {:?}, off {off})",
                    *ch as char
                )
            }
            Op::Truncate { p, len } => write!(f, "truncate({p:?}, {len})"),
            Op::Ftruncate { p, len } => write!(f, "open({p:?}, O_WRONLY); ftruncate({len})"),
            Op::Fallocate { p, mode, off, len } => {
                write!(
                    f,
                    "open({p:?}, O_WRONLY); fallocate(mode {mode:#x}, off {off}, len {len})"
                )
            }
            Op::CopyRange {
                src,
                dst,
                off_in,
                off_out,
                len,
            } => write!(
                f,
                "copy_file_range({src:?} @{off_in} -> {dst:?} @{off_out}, {len})"
            ),
            Op::Read { p } => write!(f, "read({p:?})"),
            Op::Stat { p } => write!(f, "lstat({p:?})"),
            Op::Readdir { p } => write!(f, "readdir({p:?})"),
            Op::Readlink { p } => write!(f, "readlink({p:?})"),
            Op::Unlink { p } => write!(f, "unlink({p:?})"),
            Op::Mkdir { p, mode } => write!(f, "mkdir({p:?}, {mode:#o})"),
            Op::Rmdir { p } => write!(f, "rmdir({p:?})"),
            Op::Rename { src, dst, flags } => {
                write!(
                    f,
                    "renameat2({src:?}, {dst:?}, {})",
                    show_rename_flags(*flags)
                )
            }
            Op::Link { src, dst } => write!(f, "link({src:?}, {dst:?})"),
            Op::Symlink { target, p } => write!(f, "symlink({target:?}, {p:?})"),
            Op::Chmod { p, mode } => write!(f, "chmod({p:?}, {mode:#o})"),
            Op::Chown { p, uid, gid } => {
                write!(f, "lchown({p:?}, {}, {})", *uid as i32, *gid as i32)
            }
            Op::Utimens { p, atime, mtime } => write!(
                f,
                "utimensat({p:?}, atime {}, mtime {}, AT_SYMLINK_NOFOLLOW)",
                show_t(atime),
                show_t(mtime)
            ),
            Op::SetXattr {
                p,
                name,
                value,
                flags,
            } => write!(
                f,
                "lsetxattr({p:?}, {name:?}, {value:?}, {})",
                show_xattr_flags(*flags)
            ),
            Op::RemoveXattr { p, name } => write!(f, "lremovexattr({p:?}, {name:?})"),
            Op::GetXattr { p, name } => write!(f, "lgetxattr({p:?}, {name:?})"),
            Op::ListXattr { p } => write!(f, "llistxattr({p:?})"),
            Op::Mknod { p, node, mode } => match node {
                Node::Fifo => write!(f, "mknod({p:?}, S_IFIFO|{mode:#o})"),
                Node::Chr(a, b) => write!(f, "mknod({p:?}, S_IFCHR|{mode:#o}, {a}:{b})"),
            },
        }
    }
}
