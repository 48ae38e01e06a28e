//! The `fuser::Filesystem` impl: a thin dispatcher from FUSE requests to [`Overlay`].
//!
//! Every request runs under `catch_unwind`: a bug answers that one request with EIO (the
//! dropped reply does it) instead of killing the mount for every process.

use std::ffi::OsStr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, FopenFlags, INodeNo, KernelConfig, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyXattr, Request,
};

use crate::file::Handle;
use crate::overlay::{Overlay, fuse_file_type};
use crate::sys;
use crate::xattrs::XattrReply;

pub struct OverlayFs {
    pub ov: Arc<Overlay>,
}

fn errno(e: sys::Errno) -> Errno {
    Errno::from_i32(e.raw_os_error())
}

/// Runs one request handler; a panic is logged and the request fails with EIO.
fn guarded<F: FnOnce()>(op: &'static str, f: F) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        log::error!("request {op} panicked; answered with EIO");
    }
}

const GENERATION: fuser::Generation = fuser::Generation(0);

impl Filesystem for OverlayFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        use fuser::InitFlags as F;
        let wanted = F::FUSE_DO_READDIRPLUS
            | F::FUSE_READDIRPLUS_AUTO
            | F::FUSE_PARALLEL_DIROPS
            | F::FUSE_CACHE_SYMLINKS
            | F::FUSE_EXPORT_SUPPORT;
        let _ = config.add_capabilities(wanted & config.capabilities());
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        guarded("lookup", || match self.ov.lookup(parent.0, name) {
            Ok(attr) => reply.entry(&self.ov.ttl, &attr, GENERATION),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        guarded("forget", || self.ov.forget(ino.0, nlookup))
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        guarded("getattr", || match self.ov.getattr(ino.0) {
            Ok(attr) => reply.attr(&self.ov.ttl, &attr),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        guarded("readlink", || match self.ov.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        guarded("open", || match self.ov.open(ino.0, flags.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(errno(e)),
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
        guarded("read", || match self.ov.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
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
        reply.ok()
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
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
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
            let handle = match self.ov.dir_handle(fh.0) {
                Ok(h) => h,
                Err(e) => return reply.error(errno(e)),
            };
            let Handle::Dir(dir) = &*handle else {
                return reply.error(Errno::ENOTDIR);
            };
            for (i, entry) in dir.entries.iter().enumerate().skip(offset as usize) {
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
            let handle = match self.ov.dir_handle(fh.0) {
                Ok(h) => h,
                Err(e) => return reply.error(errno(e)),
            };
            let Handle::Dir(dir) = &*handle else {
                return reply.error(Errno::ENOTDIR);
            };
            for (i, entry) in dir.entries.iter().enumerate().skip(offset as usize) {
                let attr = if i < 2 {
                    // `.` and `..`: the kernel takes no reference for them.
                    self.ov.dot_attr(entry)
                } else {
                    match self.ov.lookup(dir.node.id, &entry.name) {
                        Ok(attr) => attr,
                        // Gone since opendir: skip it, as a fresh listing would.
                        Err(_) => continue,
                    }
                };
                if reply.add(INodeNo(attr.ino.0), i as u64 + 1, &entry.name, &self.ov.ttl, &attr, GENERATION) {
                    if i >= 2 {
                        // The kernel drops entries that did not fit: undo their reference.
                        self.ov.forget(attr.ino.0, 1);
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

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        guarded("listxattr", || match self.ov.listxattr(ino.0, size) {
            Ok(XattrReply::Size(n)) => reply.size(n),
            Ok(XattrReply::Data(d)) => reply.data(&d),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        guarded("access", || match self.ov.access(ino.0, mask.bits() as u32) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        })
    }
}
