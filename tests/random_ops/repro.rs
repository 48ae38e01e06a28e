//! A stand-alone Python script reproducing a sequence of steps by hand.

use super::*;

/// A stand-alone Python 3 script performing `steps` in the current directory (a mount root), printing
/// each result, for reproducing a divergence by hand on both mounts.
pub(crate) fn python_repro(steps: &[Step]) -> String {
    let mut s = String::from(
        "import ctypes, os\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         F = os.O_NOFOLLOW | os.O_NONBLOCK\n\
         def run(i, f):\n\
         \x20   try:\n\
         \x20       r = f()\n\
         \x20       print(i, 'Ok', '' if r is None else r)\n\
         \x20   except OSError as e:\n\
         \x20       print(i, 'Err', e.errno and os.strerror(e.errno))\n\
         \x20   finally:\n\
         \x20       os.seteuid(0); os.setegid(0); os.setgroups([0])\n\
         def chk(r):\n\
         \x20   if r < 0:\n\
         \x20       e = ctypes.get_errno(); raise OSError(e, os.strerror(e))\n\
         def as_user(u, g):\n\
         \x20   os.setgroups([g]); os.setegid(g); os.seteuid(u)\n\
         def wr(p, fl, data, off=None, mode=0o644, fsync=False):\n\
         \x20   fd = os.open(p, fl | F, mode)\n\
         \x20   try:\n\
         \x20       n = os.pwrite(fd, data, off) if off is not None else os.write(fd, data)\n\
         \x20       if fsync: os.fsync(fd)\n\
         \x20       return 'wrote %d size %d' % (n, os.fstat(fd).st_size)\n\
         \x20   finally: os.close(fd)\n\
         def withfd(p, fl, f):\n\
         \x20   fd = os.open(p, fl | F)\n\
         \x20   try: return f(fd)\n\
         \x20   finally: os.close(fd)\n",
    );
    let q = |p: &str| format!("{p:?}");
    for (i, st) in steps.iter().enumerate() {
        let user = match st.who {
            Who::Root => String::new(),
            Who::User(u, g) => format!("as_user({u}, {g}) or "),
        };
        let body = match &st.op {
            Op::Create {
                p,
                mode,
                excl,
                len,
                ch,
                fsync,
            } => format!(
                "wr({}, os.O_WRONLY|os.O_CREAT|os.O_TRUNC{}, b'{}'*{len}, None, {mode:#o}, {})",
                q(p),
                if *excl { "|os.O_EXCL" } else { "" },
                *ch as char,
                if *fsync { "True" } else { "False" }
            ),
            Op::Append { p, len, ch } => {
                format!(
                    "wr({}, os.O_WRONLY|os.O_APPEND, b'{}'*{len})",
                    q(p),
                    *ch as char
                )
            }
            Op::WriteAt { p, off, len, ch } => {
                format!("wr({}, os.O_WRONLY, b'{}'*{len}, {off})", q(p), *ch as char)
            }
            Op::Truncate { p, len } => format!("os.truncate({}, {len})", q(p)),
            Op::Ftruncate { p, len } => {
                format!(
                    "withfd({}, os.O_WRONLY, lambda fd: os.ftruncate(fd, {len}))",
                    q(p)
                )
            }
            Op::Fallocate { p, mode, off, len } => format!(
                "withfd({}, os.O_WRONLY, lambda fd: chk(libc.fallocate(fd, {mode}, ctypes.c_long({off}), ctypes.c_long({len}))))",
                q(p)
            ),
            Op::CopyRange {
                src,
                dst,
                off_in,
                off_out,
                len,
            } => format!(
                "withfd({}, os.O_RDONLY, lambda a: withfd({}, os.O_WRONLY, lambda b: os.copy_file_range(a, b, {len}, {off_in}, {off_out})))",
                q(src),
                q(dst)
            ),
            Op::Read { p } => format!(
                "withfd({}, os.O_RDONLY, lambda fd: (lambda d: (len(d), d[:40]))(os.pread(fd, 1 << 22, 0)))",
                q(p)
            ),
            Op::Stat { p } => format!(
                "(lambda st: 'mode %o uid %d gid %d size %d nlink %d ino %d' % (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_nlink, st.st_ino))(os.lstat({}))",
                q(p)
            ),
            Op::Readdir { p } => format!("sorted(os.listdir({}))", q(p)),
            Op::Readlink { p } => format!("os.readlink({})", q(p)),
            Op::Unlink { p } => format!("os.unlink({})", q(p)),
            Op::Mkdir { p, mode } => format!("os.mkdir({}, {mode:#o})", q(p)),
            Op::Rmdir { p } => format!("os.rmdir({})", q(p)),
            Op::Rename { src, dst, flags } => format!(
                "chk(libc.renameat2(-100, {}.encode(), -100, {}.encode(), {flags}))",
                q(src),
                q(dst)
            ),
            Op::Link { src, dst } => {
                format!("os.link({}, {}, follow_symlinks=False)", q(src), q(dst))
            }
            Op::Symlink { target, p } => format!("os.symlink({}, {})", q(target), q(p)),
            Op::Chmod { p, mode } => format!("os.chmod({}, {mode:#o})", q(p)),
            Op::Chown { p, uid, gid } => {
                format!("os.lchown({}, {}, {})", q(p), *uid as i32, *gid as i32)
            }
            Op::Utimens { p, atime, mtime } => {
                let t = |t: &T| match t {
                    T::Omit => "(0, (1 << 30) - 2)".to_string(),
                    T::Now => "(0, (1 << 30) - 1)".to_string(),
                    T::At(a, b) => format!("({a}, {b})"),
                };
                format!(
                    "chk(libc.utimensat(-100, {}.encode(), (ctypes.c_long * 4)(*{}, *{}), 0x100))",
                    q(p),
                    t(atime),
                    t(mtime)
                )
            }
            Op::SetXattr {
                p,
                name,
                value,
                flags,
            } => format!(
                "os.setxattr({}, {}, b{}, {flags}, follow_symlinks=False)",
                q(p),
                q(name),
                q(value)
            ),
            Op::RemoveXattr { p, name } => {
                format!(
                    "os.removexattr({}, {}, follow_symlinks=False)",
                    q(p),
                    q(name)
                )
            }
            Op::GetXattr { p, name } => {
                format!("os.getxattr({}, {}, follow_symlinks=False)", q(p), q(name))
            }
            Op::ListXattr { p } => format!("sorted(os.listxattr({}, follow_symlinks=False))", q(p)),
            Op::Mknod { p, node, mode } => match node {
                Node::Fifo => format!("os.mknod({}, 0o10000|{mode:#o})", q(p)),
                Node::Chr(a, b) => {
                    format!(
                        "os.mknod({}, 0o20000|{mode:#o}, os.makedev({a}, {b}))",
                        q(p)
                    )
                }
            },
        };
        s += &format!("run({i}, lambda: {user}{body})  # {st}\n");
    }
    s
}
