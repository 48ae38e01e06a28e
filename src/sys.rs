//! Every raw system call of the daemon, and the only module with `unsafe`.
//!
//! Paths are always resolved one component at a time relative to a directory fd with
//! `O_NOFOLLOW`, so a symlink stored in a layer is never followed by the daemon.
//! xattrs of `O_PATH` fds go through `/proc/self/fd/N`, as libfuse's passthrough_hp does.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

pub use rustix::fs::Stat;
use rustix::fs::{AtFlags, Mode, OFlags};
pub use rustix::io::Errno;

pub type SysResult<T> = Result<T, Errno>;

mod fuse_dev;
mod handle;
mod process;
mod xattr;
pub use fuse_dev::{fuse_connection_ended, notify_inval_attrs, notify_prune, notify_resend};
pub use handle::{file_handle, fs_uuid, open_by_handle};
pub use process::*;
pub use xattr::*;

/// `/proc/self/fd/N` for an fd: the handle for path-only syscalls on `O_PATH` fds.
pub fn proc_fd_path(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a number")
}

/// Opens a path of the caller's choosing (a layer root), following symlinks, as `O_PATH`.
pub fn open_layer_root(path: &std::path::Path) -> SysResult<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// `O_PATH | O_NOFOLLOW` handle of `name` in `dir`: the per-inode handle of the inode table.
pub fn open_path_at(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens `name` in `dir` for I/O, never following a final symlink.
pub fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlags, mode: u32) -> SysResult<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
}

/// An unnamed regular file in `dir` (`O_TMPFILE`, write-only), which can later be linked
/// into a directory; `None` where the filesystem cannot make one.
pub fn open_tmpfile(dir: BorrowedFd<'_>, mode: u32) -> SysResult<Option<OwnedFd>> {
    match rustix::fs::openat(
        dir,
        c".",
        OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    ) {
        Ok(fd) => Ok(Some(fd)),
        // EISDIR: a kernel that predates O_TMPFILE sees a directory open for writing.
        Err(Errno::OPNOTSUPP) | Err(Errno::ISDIR) | Err(Errno::INVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Re-opens an `O_PATH` fd with real access flags (through /proc, as passthrough_hp does).
pub fn reopen(fd: BorrowedFd<'_>, flags: OFlags) -> SysResult<OwnedFd> {
    let flags = flags & !(OFlags::CREATE | OFlags::EXCL | OFlags::NOCTTY | OFlags::NOFOLLOW);
    rustix::fs::open(
        proc_fd_path(fd).as_c_str(),
        flags | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// `lstat` of `name` relative to `dir`.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<Stat> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

/// Whether the object behind `fd` is reached through an id-mapped mount (its owners are then
/// shown through that mount's mapping, not as stored): the mount's per-mount options in
/// `/proc/self/mountinfo` say `idmapped`.
pub fn on_idmapped_mount(fd: BorrowedFd<'_>) -> bool {
    let Ok(st) = rustix::fs::statx(
        fd,
        c"",
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        rustix::fs::StatxFlags::MNT_ID,
    ) else {
        return false;
    };
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let id = st.stx_mnt_id.to_string();
    mountinfo.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        fields.first() == Some(&id.as_str())
            && fields
                .get(5)
                .is_some_and(|opts| opts.split(',').any(|o| o == "idmapped"))
    })
}

/// `stat` of the object an fd (possibly `O_PATH`) refers to.
pub fn stat_fd(fd: BorrowedFd<'_>) -> SysResult<Stat> {
    rustix::fs::statat(fd, c"", AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW)
}

pub fn readlink_fd(fd: BorrowedFd<'_>) -> SysResult<Vec<u8>> {
    Ok(rustix::fs::readlinkat(fd, c"", Vec::new())?.into_bytes())
}

pub fn statvfs(fd: BorrowedFd<'_>) -> SysResult<rustix::fs::StatVfs> {
    rustix::fs::fstatvfs(fd)
}

/// Whether the object behind an `O_PATH` fd is accessible with `mode` (R_OK|W_OK|X_OK bits).
pub fn access_fd(fd: BorrowedFd<'_>, mode: u32) -> SysResult<()> {
    let access = rustix::fs::Access::from_bits_truncate(mode);
    rustix::fs::accessat(fd, c"", access, AtFlags::EMPTY_PATH)
}

/// One entry of a real directory listing.
#[derive(Debug, Clone)]
pub struct RawDirEntry {
    pub name: OsString,
    pub ino: u64,
    pub file_type: rustix::fs::FileType,
}

/// Reads a whole directory (given as any fd to it, `O_PATH` included), minus `.` and `..`.
pub fn read_dir(dir: BorrowedFd<'_>) -> SysResult<Vec<RawDirEntry>> {
    // rustix's Dir::read_from would keep O_PATH, which getdents refuses: open "." for reading.
    let fd = rustix::fs::openat(
        dir,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut listing = rustix::fs::Dir::new(fd)?;
    let mut entries = Vec::new();
    while let Some(entry) = listing.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        entries.push(RawDirEntry {
            name: OsString::from_vec(name.to_vec()),
            ino: entry.ino(),
            file_type: entry.file_type(),
        });
    }
    Ok(entries)
}

/// The errno of the libc call that just failed.
pub(crate) fn last_errno() -> Errno {
    Errno::from_raw_os_error(
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> SysResult<usize> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::pread(fd, &mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], offset: u64) -> SysResult<usize> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::pwrite(fd, &buf[done..], offset + done as u64) {
            Ok(n) => done += n,
            Err(Errno::INTR) => continue,
            Err(e) if done > 0 => {
                log::debug!("short write after {done} bytes: {e}");
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Whether `trusted.*` xattrs are usable: CAP_SYS_ADMIN in the initial user namespace
/// (inside `unshare -U` the capability is namespaced and trusted.* stays out of reach).
pub fn can_use_trusted_xattrs() -> bool {
    has_cap_sys_admin() && in_initial_user_namespace()
}

fn in_initial_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|map| {
        let fields: Vec<&str> = map.split_whitespace().collect();
        fields == ["0", "0", "4294967295"]
    })
}

/// The effective capability check the xattr namespace depends on (see docs/format.md).
pub fn has_cap_sys_admin() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    let status = match std::fs::read_to_string("/proc/self/status") {
        Ok(s) => s,
        Err(_) => return false,
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

pub fn geteuid() -> u32 {
    rustix::process::geteuid().as_raw()
}

// ---- process control: daemonizing and signals -------------------------------------------

/// Takes ownership of an fd inherited from the parent, which named it (once) to this process.
pub fn inherited_fd(fd: i32) -> SysResult<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_GETFD only checks whether the number names an open fd.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(Errno::BADF);
    }
    // SAFETY: the fd is open and nothing else in this process owns it (see above).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pipe whose write end the daemon child uses to tell the parent the mount is live.
pub fn pipe() -> SysResult<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
}

pub enum ForkResult {
    Parent,
    Child,
}

/// `fork(2)`. Must be called while the process has a single thread.
pub fn fork() -> SysResult<ForkResult> {
    // SAFETY: called before any thread is spawned (main() forks first thing after parsing
    // options), so the child gets a consistent copy of the whole address space.
    match unsafe { libc::fork() } {
        -1 => Err(last_errno()),
        0 => Ok(ForkResult::Child),
        _ => Ok(ForkResult::Parent),
    }
}

/// Detaches the daemon from the caller as libfuse's `fuse_daemonize` does: a new session,
/// `/` as the working directory (the caller's stays unmountable otherwise), stdio on
/// /dev/null.
pub fn detach_stdio_and_session() {
    let _ = rustix::process::setsid();
    let _ = chdir_root();
    if let Ok(null) = rustix::fs::open(c"/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
    {
        for target in 0..3 {
            // SAFETY: 0..=2 are the standard descriptors; dup2 over them replaces them
            // atomically and `null` stays owned (and closed) by its OwnedFd.
            unsafe {
                libc::dup2(null.as_raw_fd(), target);
            }
        }
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and every thread it spawns later,
/// so that only [`wait_for_termination_signal`] receives them.
pub fn block_termination_signals() {
    let set = termination_signals();
    // SAFETY: `set` is an initialised sigset_t on the stack; a null old-set pointer is allowed.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for one of the signals blocked by [`block_termination_signals`]; returns its number.
pub fn wait_for_termination_signal() -> i32 {
    let set = termination_signals();
    let mut sig: libc::c_int = 0;
    // SAFETY: both pointers are to live, initialised locals.
    unsafe {
        libc::sigwait(&set, &mut sig);
    }
    sig
}

fn termination_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before sigaddset reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

pub fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> SysResult<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn read_to_end(fd: BorrowedFd<'_>) -> SysResult<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match rustix::io::read(fd, &mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Removes everything inside a directory (not the directory itself), never following
/// symlinks: used to clear stale copy-up temp objects from the workdir at mount.
pub fn remove_tree_contents(dir: BorrowedFd<'_>) -> SysResult<()> {
    for entry in read_dir(dir)? {
        match rustix::fs::unlinkat(dir, entry.name.as_os_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(Errno::ISDIR) | Err(Errno::PERM)
                if entry.file_type == rustix::fs::FileType::Directory
                    || entry.file_type == rustix::fs::FileType::Unknown =>
            {
                let sub = open_at(dir, &entry.name, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
                remove_tree_contents(sub.as_fd())?;
                rustix::fs::unlinkat(dir, entry.name.as_os_str(), AtFlags::REMOVEDIR)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// ---- write side -----------------------------------------------------------------------

pub use rustix::fs::RenameFlags;

pub fn mkdir_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> SysResult<()> {
    rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode))
}

/// `mknodat` with a full `st_mode` (type bits included).
pub fn mknod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32, rdev: u64) -> SysResult<()> {
    let file_type = rustix::fs::FileType::from_raw_mode(mode);
    rustix::fs::mknodat(
        dir,
        name,
        file_type,
        Mode::from_raw_mode(mode & 0o7777),
        rdev,
    )
}

pub fn symlink_at(target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    rustix::fs::symlinkat(target, dir, name)
}

/// Hard-links the object behind an `O_PATH` fd as `dir/name` (via /proc, which needs no
/// CAP_DAC_READ_SEARCH, unlike `AT_EMPTY_PATH`).
pub fn link_fd_at(fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    rustix::fs::linkat(
        rustix::fs::CWD,
        proc_fd_path(fd).as_c_str(),
        dir,
        name,
        AtFlags::SYMLINK_FOLLOW,
    )
}

/// Hard-links `old_dir/old` as `new_dir/new` (never following a symlink).
pub fn link_at(
    old_dir: BorrowedFd<'_>,
    old: &OsStr,
    new_dir: BorrowedFd<'_>,
    new: &OsStr,
) -> SysResult<()> {
    rustix::fs::linkat(old_dir, old, new_dir, new, AtFlags::empty())
}

pub fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    rustix::fs::unlinkat(dir, name, AtFlags::empty())
}

pub fn rmdir_at(dir: BorrowedFd<'_>, name: &OsStr) -> SysResult<()> {
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

pub fn rename_at(
    old_dir: BorrowedFd<'_>,
    old: &OsStr,
    new_dir: BorrowedFd<'_>,
    new: &OsStr,
    flags: RenameFlags,
) -> SysResult<()> {
    rustix::fs::renameat_with(old_dir, old, new_dir, new, flags)
}

/// `lchown` of `dir/name`; `None` leaves that id unchanged.
pub fn chown_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    uid: Option<u32>,
    gid: Option<u32>,
) -> SysResult<()> {
    let uid = uid.map(rustix::fs::Uid::from_raw);
    let gid = gid.map(rustix::fs::Gid::from_raw);
    rustix::fs::chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
}

/// `chmod` of the object behind an fd (not for symlinks, whose mode Linux ignores).
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> SysResult<()> {
    rustix::fs::chmod(
        proc_fd_path(fd).as_c_str(),
        Mode::from_raw_mode(mode & 0o7777),
    )
}

/// A timestamp for [`utimens_fd`]: `None` = leave unchanged, `Some(None)` = now.
pub type TimeSpec = Option<Option<(i64, i64)>>;

fn timespec(t: TimeSpec) -> rustix::fs::Timespec {
    match t {
        None => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        Some(None) => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        Some(Some((s, ns))) => rustix::fs::Timespec {
            tv_sec: s,
            tv_nsec: ns as _,
        },
    }
}

pub fn truncate_fd(fd: BorrowedFd<'_>, size: u64) -> SysResult<()> {
    rustix::fs::ftruncate(fd, size)
}

pub fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> SysResult<()> {
    if datasync {
        rustix::fs::fdatasync(fd)
    } else {
        rustix::fs::fsync(fd)
    }
}

pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, offset: u64, len: u64) -> SysResult<()> {
    let mode = rustix::fs::FallocateFlags::from_bits_retain(mode as u32);
    rustix::fs::fallocate(fd, mode, offset, len)
}

/// `lseek`, for SEEK_DATA/SEEK_HOLE (and the plain whences).
pub fn lseek(fd: BorrowedFd<'_>, offset: i64, whence: i32) -> SysResult<u64> {
    use rustix::fs::SeekFrom;
    let pos = match whence {
        libc::SEEK_SET => SeekFrom::Start(offset as u64),
        libc::SEEK_CUR => SeekFrom::Current(offset),
        libc::SEEK_END => SeekFrom::End(offset),
        libc::SEEK_DATA => SeekFrom::Data(offset as u64),
        libc::SEEK_HOLE => SeekFrom::Hole(offset as u64),
        _ => return Err(Errno::INVAL),
    };
    rustix::fs::seek(fd, pos)
}

pub fn copy_file_range(
    fd_in: BorrowedFd<'_>,
    off_in: u64,
    fd_out: BorrowedFd<'_>,
    off_out: u64,
    len: usize,
) -> SysResult<usize> {
    let (mut a, mut b) = (off_in, off_out);
    rustix::fs::copy_file_range(fd_in, Some(&mut a), fd_out, Some(&mut b), len)
}

/// Reflinks all of `src` into `dst` (FICLONE); fails where the filesystem cannot share extents.
pub fn clone_file(dst: BorrowedFd<'_>, src: BorrowedFd<'_>) -> SysResult<()> {
    rustix::fs::ioctl_ficlone(dst, src)
}

/// Sets the process umask (the daemon creates objects with exactly the modes it is asked for).
pub fn set_umask(mask: u32) {
    rustix::process::umask(Mode::from_raw_mode(mask));
}

/// `chown` of the object behind an `O_PATH` fd, never following a symlink.
pub fn chown_fd(fd: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> SysResult<()> {
    let uid = uid.map(rustix::fs::Uid::from_raw);
    let gid = gid.map(rustix::fs::Gid::from_raw);
    rustix::fs::chownat(
        fd,
        c"",
        uid,
        gid,
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
    )
}

/// Sets the times of the object behind an `O_PATH` fd, symlinks included (`AT_EMPTY_PATH`;
/// kernels without it for utimensat get the /proc path, which does not work on symlinks).
pub fn utimens_fd(fd: BorrowedFd<'_>, atime: TimeSpec, mtime: TimeSpec) -> SysResult<()> {
    let times = rustix::fs::Timestamps {
        last_access: timespec(atime),
        last_modification: timespec(mtime),
    };
    match rustix::fs::utimensat(fd, c"", &times, AtFlags::EMPTY_PATH) {
        Err(Errno::INVAL) => {
            let path = proc_fd_path(fd);
            rustix::fs::utimensat(rustix::fs::CWD, path.as_c_str(), &times, AtFlags::empty())
        }
        other => other,
    }
}

/// Raises the open-file limit as far as allowed: every live node holds an `O_PATH` fd
/// (as in passthrough_hp), so big trees need many. Returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let current = getrlimit(Resource::Nofile);
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    // With CAP_SYS_RESOURCE the hard limit itself may go up to fs.nr_open.
    if let Some(max) = nr_open {
        let wanted = Rlimit {
            current: Some(max),
            maximum: Some(max),
        };
        if setrlimit(Resource::Nofile, wanted).is_ok() {
            return max;
        }
    }
    let hard = current.maximum;
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: hard,
            maximum: hard,
        },
    );
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// `umount2(path, MNT_DETACH)`.
pub fn lazy_unmount(path: &std::path::Path) -> SysResult<()> {
    rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH)
}

/// Opens `path` below `root` as `O_PATH`, refusing symlinks anywhere on the way and any
/// escape from `root` (openat2 `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`).
pub fn open_beneath(root: BorrowedFd<'_>, path: &CStr) -> SysResult<OwnedFd> {
    use rustix::fs::ResolveFlags;
    rustix::fs::openat2(
        root,
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
}

/// The path of the object behind `fd` relative to `root` (from /proc/self/fd), if it lies
/// below it and is still reachable there.
pub fn path_below(fd: BorrowedFd<'_>, root: &std::path::Path) -> Option<CString> {
    let link = std::fs::read_link(proc_fd_path(fd).to_str().ok()?).ok()?;
    let rel = link.strip_prefix(root).ok()?;
    let rel = rel.as_os_str().as_bytes();
    if rel.is_empty() || link.as_os_str().as_bytes().ends_with(b" (deleted)") {
        return None;
    }
    CString::new(rel).ok()
}

/// Returns free heap memory to the system (glibc keeps freed chunks of its arenas otherwise,
/// so the daemon's RSS would stay at the peak of the largest tree ever walked). A no-op on
/// other C libraries: musl has no `malloc_trim` (its allocator returns memory by itself).
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only inspects and trims the allocator's own free lists; it is
    // thread-safe in glibc and takes no pointers from us.
    unsafe {
        libc::malloc_trim(0);
    };
}

// ---- the workdir lock, layer access checks ----------------------------------------------

/// Opens a directory named by the user for reading (`O_RDONLY`, following symlinks): an fd
/// that `flock` accepts, unlike `O_PATH`.
pub fn open_dir(path: &std::path::Path) -> SysResult<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// `flock(LOCK_EX | LOCK_NB)`: `Err(WOULDBLOCK)` when another open file description holds it.
pub fn try_lock_exclusive(fd: BorrowedFd<'_>) -> SysResult<()> {
    rustix::fs::flock(fd, rustix::fs::FlockOperation::NonBlockingLockExclusive)
}

/// Whether the calling process may access `path` with `mode` (R_OK|W_OK|X_OK bits), judged
/// with its effective ids as the kernel will judge the daemon's own accesses.
pub fn access_path(path: &std::path::Path, mode: u32) -> SysResult<()> {
    let access = rustix::fs::Access::from_bits_truncate(mode);
    rustix::fs::accessat(rustix::fs::CWD, path, access, AtFlags::EACCESS)
}

/// `chdir("/")`: a daemon must not keep the caller's directory (or its filesystem) busy.
pub fn chdir_root() -> SysResult<()> {
    rustix::process::chdir(c"/")
}

// ---- unmounting, logging -------------------------------------------------------------------

/// `umount2(path, 0)`.
pub fn unmount(path: &std::path::Path) -> SysResult<()> {
    rustix::mount::unmount(path, rustix::mount::UnmountFlags::empty())
}

/// The local time of `secs` since the epoch: (month 0-11, day of month, hour, minute,
/// second), as syslog lines carry it.
pub fn local_time(secs: i64) -> Option<(u32, u32, u32, u32, u32)> {
    // `as _`: time_t is 64-bit on every target here; naming it warns on musl.
    let t = secs as _;
    // SAFETY: tm is plain data that localtime_r fills; both pointers are to live locals, and
    // localtime_r (unlike localtime) keeps no shared result buffer.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return None;
        }
        tm
    };
    Some((
        tm.tm_mon as u32,
        tm.tm_mday as u32,
        tm.tm_hour as u32,
        tm.tm_min as u32,
        tm.tm_sec as u32,
    ))
}

/// `stat` that asks the filesystem itself (`AT_STATX_FORCE_SYNC`), bypassing attributes the
/// kernel has cached: on a FUSE mount whose daemon died, cached attributes still answer a
/// plain stat, this one fails with ENOTCONN.
pub fn stat_uncached(path: &std::path::Path) -> SysResult<()> {
    rustix::fs::statx(
        rustix::fs::CWD,
        path,
        AtFlags::STATX_FORCE_SYNC,
        rustix::fs::StatxFlags::BASIC_STATS,
    )
    .map(|_| ())
}

// ---- memory shared between the supervisor and its workers --------------------------------

/// A `MAP_SHARED` mapping of a memfd as 64-bit atomics: what one worker writes there, the
/// supervisor and the next worker see, whatever happens to the writer.
#[derive(Debug)]
pub struct SharedWords {
    ptr: std::ptr::NonNull<std::sync::atomic::AtomicU64>,
    words: usize,
}

// SAFETY: the mapping is only reached through `&[AtomicU64]`, which is Send and Sync.
unsafe impl Send for SharedWords {}
// SAFETY: as above.
unsafe impl Sync for SharedWords {}

impl SharedWords {
    /// Maps the first `words` 64-bit words of `fd` (a memfd at least that big).
    pub fn map(fd: BorrowedFd<'_>, words: usize) -> SysResult<SharedWords> {
        use rustix::mm::{MapFlags, ProtFlags, mmap};
        let len = words.checked_mul(8).ok_or(Errno::INVAL)?.max(8);
        // SAFETY: no address is given, so the kernel picks fresh pages that nothing in this
        // process refers to yet; the file stays mapped until `drop`.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )?
        };
        let ptr = std::ptr::NonNull::new(ptr.cast()).ok_or(Errno::NOMEM)?;
        Ok(SharedWords {
            ptr,
            words: len / 8,
        })
    }

    pub fn words(&self) -> &[std::sync::atomic::AtomicU64] {
        // SAFETY: the mapping is `words * 8` bytes, page-aligned, and lives as long as
        // `self`; AtomicU64 has u64's layout and every bit pattern is a valid value; the
        // other processes sharing the pages only use atomic accesses too.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.words) }
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the range `map` mapped; no reference to it outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.words * 8) };
    }
}
