//! The `fuser::Filesystem` impl: a thin dispatcher from FUSE requests to [`Overlay`].
//!
//! Every request runs under `catch_unwind`: a bug answers that one request with EIO (the
//! dropped reply does it) instead of killing the mount for every process.

use std::ffi::OsStr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use std::os::fd::BorrowedFd;
use std::path::Path;
use std::time::SystemTime;

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileHandle, Filesystem, FopenFlags,
    INodeNo, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::attr::AttrChanges;
use crate::handles::{DirHandle, Opened};
use crate::overlay::{Entry, Overlay, fuse_file_type};
use crate::readdir::MergedEntry;
use crate::request::{Caller, NewObject};
use crate::sys;
use crate::xattrs::XattrReply;

pub struct OverlayFs {
    pub ov: Arc<Overlay>,
}

fn errno(e: sys::Errno) -> Errno {
    crate::logging::reply_error(e.raw_os_error());
    Errno::from_i32(e.raw_os_error())
}

/// Runs one request handler; a panic is logged and the request fails with EIO.
fn guarded<F: FnOnce()>(op: &'static str, f: F) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        crate::logging::error_limited(
            "request-panic",
            format_args!("request {op} panicked; answered with EIO"),
        );
    }
}

const GENERATION: fuser::Generation = fuser::Generation(0);

fn request_caller(req: &Request) -> Caller {
    Caller {
        pid: req.pid(),
        uid: req.uid(),
        gid: req.gid(),
    }
}

impl OverlayFs {
    fn reply_entry(&self, result: crate::sys::SysResult<Entry>, reply: ReplyEntry) {
        match result {
            Ok(e) => reply.entry_node(
                INodeNo(e.id),
                &self.ov.ttl,
                &self.ov.ttl,
                &e.attr,
                GENERATION,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn new_object(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        object: NewObject<'_>,
        reply: ReplyEntry,
    ) {
        let result = self
            .ov
            .create_object(parent.0, name, object, request_caller(req))
            .map(|(entry, _)| entry);
        let result = match result {
            // Made by a worker that died before answering (see `resent`).
            Err(e) if e == sys::Errno::EXIST && resent(req) => self.ov.lookup(parent.0, name),
            other => other,
        };
        self.reply_entry(result, reply)
    }
}

impl OverlayFs {
    /// An open directory and its merged listing.
    fn listing(&self, fh: FileHandle) -> Result<(Arc<DirHandle>, Arc<Vec<MergedEntry>>), Errno> {
        let dir = self.ov.dir_handle(fh.0).map_err(errno)?;
        let entries = self.ov.dir_entries(&dir).map_err(errno)?;
        Ok((dir, entries))
    }
}

/// A request the kernel queued again after the worker that read it died (it marks `unique`
/// when a new worker sends `FUSE_NOTIFY_RESEND`). That worker may have done it already: a
/// namespace change then finds its own result (`EEXIST` from a create, `ENOENT` from a
/// removal), which is success. Nothing else can have made or removed the name meanwhile: the
/// kernel holds the directory's lock until the request is answered.
fn resent(req: &Request) -> bool {
    req.unique().0 & (1 << 63) != 0
}

/// A removal's or rename's result, where a resent request's `ENOENT` means it was done.
fn already_done(req: &Request, result: crate::sys::SysResult<()>) -> crate::sys::SysResult<()> {
    match result {
        Err(e) if e == sys::Errno::NOENT && resent(req) => Ok(()),
        other => other,
    }
}

fn reply_empty(result: crate::sys::SysResult<()>, reply: ReplyEmpty) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

impl Filesystem for OverlayFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        use fuser::InitFlags as F;
        let wanted = F::FUSE_DO_READDIRPLUS
            | F::FUSE_READDIRPLUS_AUTO
            | F::FUSE_PARALLEL_DIROPS
            | F::FUSE_CACHE_SYMLINKS;
        let wanted = if self.ov.noacl {
            wanted
        } else {
            // The kernel then caches ACLs and checks them itself (default_permissions is on).
            wanted | F::FUSE_POSIX_ACL
        };
        let _ = config.add_capabilities(wanted & config.capabilities());
        self.ov.negotiate_data_path(config);
        self.ov.mark_upper_root();
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        guarded("lookup", || match self.ov.lookup(parent.0, name) {
            Ok(e) => reply.entry_node(
                INodeNo(e.id),
                &self.ov.ttl,
                &self.ov.ttl,
                &e.attr,
                GENERATION,
            ),
            // Node id 0 is "no such entry" that the kernel may cache for the TTL: every
            // change that could create the name goes through this daemon.
            Err(e) if e == crate::sys::Errno::NOENT => {
                reply.entry(&self.ov.ttl, &self.ov.negative_attr(), GENERATION)
            }
            Err(e) => reply.error(errno(e)),
        })
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        guarded("forget", || self.ov.forget(ino.0, nlookup))
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        guarded("getattr", || match self.ov.getattr(ino.0) {
            Ok(attr) => reply.attr(&self.ov.attr_ttl(ino.0), &attr),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        guarded("readlink", || match self.ov.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        guarded("open", || {
            let make_backing = |fd: BorrowedFd<'_>| reply.open_backing(fd);
            match self
                .ov
                .open(ino.0, flags.0, request_caller(req), &make_backing)
            {
                Ok(Opened {
                    fh,
                    backing: Some(b),
                    ..
                }) => reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &b),
                Ok(Opened {
                    fh,
                    backing: None,
                    direct_io,
                }) => {
                    let flags = if direct_io {
                        FopenFlags::FOPEN_DIRECT_IO
                    } else {
                        FopenFlags::FOPEN_KEEP_CACHE
                    };
                    reply.opened(FileHandle(fh), flags)
                }
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        guarded("read", || {
            // Spliced from the file where possible (one copy of the data instead of two);
            // else copied, the reply moved into the closure only when the read succeeds.
            let mut reply = Some(reply);
            let _ = self.ov.with_read_fd(fh.0, |fd| {
                if let Some(r) = reply.take()
                    && let Err(r) = r.data_spliced(fd, offset, size as usize)
                {
                    reply = Some(r);
                }
            });
            if reply.is_none() {
                return;
            }
            let sent = self.ov.read(fh.0, offset, size, |data| {
                if let Some(r) = reply.take() {
                    r.data(data);
                }
            });
            if let (Err(e), Some(r)) = (sent, reply) {
                r.error(errno(e));
            }
        })
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to flush (data is written as it arrives). ENOSYS makes the kernel stop
        // sending FLUSH on every close.
        reply.error(Errno::ENOSYS)
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        guarded("release", || {
            self.ov.release(fh.0);
            reply.ok()
        })
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        guarded("opendir", || match self.ov.opendir(ino.0) {
            // The kernel may keep listings: every change to a directory goes through here,
            // and the kernel drops its cached listing on each one.
            Ok(fh) => reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        guarded("readdir", || {
            let (_, entries) = match self.listing(fh) {
                Ok(listing) => listing,
                Err(e) => return reply.error(e),
            };
            for (i, entry) in entries.iter().enumerate().skip(offset as usize) {
                let kind = fuse_file_type(entry.file_type);
                if reply.add(INodeNo(entry.ino), i as u64 + 1, kind, &entry.name) {
                    break;
                }
            }
            reply.ok()
        })
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        guarded("readdirplus", || {
            let (dir, entries) = match self.listing(fh) {
                Ok(listing) => listing,
                Err(e) => return reply.error(e),
            };
            for (i, entry) in entries.iter().enumerate().skip(offset as usize) {
                let Entry { id, attr } = if i < 2 {
                    // `.` and `..`: the kernel takes no reference for them.
                    let attr = self.ov.dot_attr(entry);
                    Entry {
                        id: attr.ino.0,
                        attr,
                    }
                } else {
                    match self.ov.lookup(dir.node.id, &entry.name) {
                        Ok(e) => e,
                        // Gone since opendir: skip it, as a fresh listing would.
                        Err(sys::Errno::NOENT) => continue,
                        // There but not resolvable (e.g. a metadata-only copy whose data is
                        // missing): listed, its stat failing as the lookup did.
                        Err(_) => Entry {
                            id: 0,
                            attr: self.ov.unlookable_attr(entry),
                        },
                    }
                };
                if reply.add(
                    INodeNo(id),
                    i as u64 + 1,
                    &entry.name,
                    &self.ov.ttl,
                    &attr,
                    GENERATION,
                ) {
                    if i >= 2 && id != 0 {
                        // The kernel drops entries that did not fit: undo their reference.
                        self.ov.forget(id, 1);
                    }
                    break;
                }
            }
            reply.ok()
        })
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        guarded("releasedir", || {
            self.ov.release(fh.0);
            reply.ok()
        })
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        guarded("statfs", || match self.ov.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        guarded("getxattr", || match self.ov.getxattr(ino.0, name, size) {
            Ok(XattrReply::Size(n)) => reply.size(n),
            Ok(XattrReply::Data(d)) => reply.data(&d),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        guarded("listxattr", || {
            match self.ov.listxattr(ino.0, size, req.uid()) {
                Ok(XattrReply::Size(n)) => reply.size(n),
                Ok(XattrReply::Data(d)) => reply.data(&d),
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        guarded("access", || {
            match self.ov.access(ino.0, mask.bits() as u32) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        guarded("setattr", || {
            let changes = AttrChanges {
                mode,
                uid,
                gid,
                size,
                atime,
                mtime,
                fh: fh.map(|f| f.0),
                caller: Some(request_caller(req)),
            };
            match self.ov.setattr(ino.0, changes) {
                Ok(attr) => {
                    self.ov.attrs_changed(ino.0);
                    reply.attr(&self.ov.attr_ttl(ino.0), &attr)
                }
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        guarded("mknod", || {
            let mode = mode & !(umask & 0o777);
            let object = if mode & libc::S_IFMT == libc::S_IFREG || mode & libc::S_IFMT == 0 {
                NewObject::File {
                    mode: mode & 0o7777,
                    flags: libc::O_WRONLY,
                }
            } else {
                NewObject::Special {
                    mode,
                    rdev: rdev as u64,
                }
            };
            self.new_object(req, parent, name, object, reply)
        })
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        guarded("mkdir", || {
            let object = NewObject::Dir {
                mode: mode & !umask & 0o7777,
            };
            self.new_object(req, parent, name, object, reply)
        })
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        guarded("symlink", || {
            let object = NewObject::Symlink {
                target: target.as_os_str(),
            };
            self.new_object(req, parent, link_name, object, reply)
        })
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        guarded("link", || {
            let result = match self.ov.link(ino.0, newparent.0, newname) {
                Err(e) if e == sys::Errno::EXIST && resent(req) => {
                    self.ov.lookup(newparent.0, newname)
                }
                other => other,
            };
            self.reply_entry(result, reply)
        })
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("unlink", || {
            let result = self.ov.remove(parent.0, name, false);
            reply_empty(already_done(req, result), reply)
        })
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("rmdir", || {
            let result = self.ov.remove(parent.0, name, true);
            reply_empty(already_done(req, result), reply)
        })
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        guarded("rename", || {
            let result = self
                .ov
                .rename(parent.0, name, newparent.0, newname, flags.bits());
            reply_empty(already_done(req, result), reply)
        })
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        guarded("create", || {
            let mode = mode & !umask & 0o7777;
            let make_backing = |fd: BorrowedFd<'_>| reply.open_backing(fd);
            let ttl = self.ov.ttl;
            let created = match self.ov.create(
                parent.0,
                name,
                mode,
                flags,
                request_caller(req),
                &make_backing,
            ) {
                // Made by a worker that died before answering: open what it made (nothing
                // is truncated: it may have been written through another open since).
                Err(e) if e == sys::Errno::EXIST && resent(req) => {
                    let flags = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC);
                    self.ov.lookup(parent.0, name).and_then(|entry| {
                        let opened =
                            self.ov
                                .open(entry.id, flags, request_caller(req), &make_backing)?;
                        Ok((entry, opened))
                    })
                }
                other => other,
            };
            match created {
                Ok((Entry { id, attr }, Opened { fh, backing, .. })) => reply.created_node(
                    INodeNo(id),
                    &ttl,
                    &attr,
                    GENERATION,
                    FileHandle(fh),
                    FopenFlags::empty(),
                    backing.as_deref(),
                ),
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        guarded("write", || match self.ov.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        guarded("fsync", || {
            reply_empty(self.ov.fsync(fh.0, datasync), reply)
        })
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        guarded("fsyncdir", || {
            reply_empty(self.ov.fsync(fh.0, datasync), reply)
        })
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        guarded("setxattr", || {
            let result = self.ov.setxattr(ino.0, name, value, flags);
            if result.is_ok() {
                self.ov.attrs_changed(ino.0);
            }
            reply_empty(result, reply)
        })
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("removexattr", || {
            let result = self.ov.removexattr(ino.0, name);
            if result.is_ok() {
                self.ov.attrs_changed(ino.0);
            }
            reply_empty(result, reply)
        })
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        guarded("fallocate", || {
            reply_empty(self.ov.fallocate(fh.0, offset, length, mode), reply)
        })
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        guarded("lseek", || match self.ov.lseek(fh.0, offset, whence) {
            Ok(pos) => reply.offset(pos),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        guarded("copy_file_range", || {
            match self
                .ov
                .copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len)
            {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(errno(e)),
            }
        })
    }
}
