//! Open file and directory handles (the kernel's file.c and the handle side of readdir.c).

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rustix::fs::OFlags;

use crate::handles::{DataPath, DirHandle, FileHandle, Handle, MakeBacking, Opened, file_handle};
use crate::inode::Node;
use crate::killpriv;
use crate::overlay::Overlay;
use crate::request::Caller;

/// Largest read buffer a thread keeps between requests (readahead asks for 128 KiB).
const MAX_KEPT_READ_BUF: usize = 1 << 20;
use crate::readdir::{self, MergedEntry};
use crate::sys::{self, Errno, SysResult};

fn wants_write(flags: i32) -> bool {
    let acc = flags & libc::O_ACCMODE;
    acc == libc::O_WRONLY || acc == libc::O_RDWR || flags & libc::O_TRUNC != 0
}

/// Open flags the daemon's own fd never gets. `O_APPEND`: the kernel sends the offsets.
/// `O_DIRECT`: the caller's buffer alignment does not reach the daemon, whose reads into its
/// own buffers would fail with EINVAL; passthrough I/O follows the caller's flags anyway.
pub(crate) const REAL_OPEN_DROPPED: OFlags =
    OFlags::CREATE.union(OFlags::APPEND).union(OFlags::DIRECT);

impl Overlay {
    /// Opens a file; a write open of a lower object copies it up first.
    pub fn open(
        &self,
        id: u64,
        flags: i32,
        caller: Caller,
        make_backing: MakeBacking<'_>,
    ) -> SysResult<Opened> {
        crate::fdbudget::throttle();
        // Safe to repeat: a copy-up is complete or not done at all.
        crate::fdbudget::retry_on_emfile(|| self.open_file(id, flags, caller, make_backing))
    }

    fn open_file(
        &self,
        id: u64,
        flags: i32,
        caller: Caller,
        make_backing: MakeBacking<'_>,
    ) -> SysResult<Opened> {
        let node = self.node(id)?;
        if node.is_dir() {
            return Err(Errno::ISDIR);
        }
        let mut clear_sgid = false;
        if wants_write(flags) {
            if self.read_only() {
                return Err(Errno::ROFS);
            }
            self.copy_up(&node)?;
            let st = self.stat_object(0, node.read().top_fd()?.as_fd())?;
            clear_sgid = killpriv::must_clear_sgid(caller, &st);
        }
        // Superseded since it was looked up (possibly by the copy-up above): the kernel
        // retries an open that fails with ESTALE after a fresh lookup, which gives it the
        // successor node.
        if node.is_superseded() {
            return Err(Errno::STALE);
        }
        // The state stays locked until the open is registered: a copy-up must see this
        // open's backing file (see `Node::put_upper`). A metadata-only copy (only ever opened
        // to read) reads its lower data file.
        let state = node.read();
        let source = state.objects.metacopy_data().unwrap_or(state.top());
        let layer = source.layer;
        let (fd, write_only) = self.open_real(source.fd.get()?.as_fd(), flags)?;
        let mut opened = self.register_open(node.clone(), layer, fd, clear_sgid, make_backing);
        drop(state);
        opened.direct_io = write_only && opened.backing.is_none();
        Ok(opened)
    }

    /// The daemon's own fd for an open of the object behind `path_fd`, and whether it is
    /// write-only although the writeback cache is on.
    fn open_real(&self, path_fd: BorrowedFd<'_>, flags: i32) -> SysResult<(OwnedFd, bool)> {
        // The kernel computes append offsets itself; O_APPEND on our fd would override the
        // offsets it sends. O_DIRECT stays with the kernel, too (see `REAL_OPEN_DROPPED`).
        let oflags = OFlags::from_bits_retain(flags as u32) & !REAL_OPEN_DROPPED;
        let write_only = oflags & OFlags::RWMODE == OFlags::WRONLY;
        if self.writeback_active() && write_only {
            // The writeback cache reads pages around partial writes: it needs read access.
            let rw = (oflags & !OFlags::RWMODE) | OFlags::RDWR;
            if let Ok(fd) = sys::reopen(path_fd, rw) {
                return Ok((fd, false));
            }
            return Ok((sys::reopen(path_fd, oflags)?, true));
        }
        Ok((sys::reopen(path_fd, oflags)?, false))
    }

    fn register_open(
        &self,
        node: Arc<Node>,
        layer: usize,
        fd: OwnedFd,
        clear_sgid: bool,
        make_backing: MakeBacking<'_>,
    ) -> Opened {
        let (data_path, clear_sgid) =
            self.choose_data_path(&node, fd.as_fd(), clear_sgid, make_backing);
        let backing = match &data_path {
            DataPath::Passthrough(b) => Some(b.clone()),
            DataPath::Cached => None,
        };
        let handle = FileHandle {
            node,
            layer,
            fd,
            data_path,
            clear_sgid: AtomicBool::new(clear_sgid),
            moved_up: OnceLock::new(),
        };
        Opened {
            fh: self.handles.insert(Handle::File(handle)),
            backing,
            direct_io: false,
        }
    }

    /// Reads up to `size` bytes at `offset` and hands them to `reply` (a per-thread buffer
    /// is reused: no allocation or zeroing per request).
    pub fn read<R>(
        &self,
        fh: u64,
        offset: u64,
        size: u32,
        reply: impl FnOnce(&[u8]) -> R,
    ) -> SysResult<R> {
        thread_local! {
            static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let handle = self.handles.get(fh)?;
        let file = file_handle(&handle)?;
        let fd = self.current_fd(file)?;
        let size = size as usize;
        if size > MAX_KEPT_READ_BUF {
            // Rare (direct I/O): not worth keeping per thread.
            let mut buf = vec![0u8; size];
            let n = sys::pread(fd, &mut buf, offset)?;
            return Ok(reply(&buf[..n]));
        }
        READ_BUF.with(|cell| {
            let mut buf = cell.borrow_mut();
            if buf.len() < size {
                buf.resize(size, 0);
            }
            let n = sys::pread(fd, &mut buf[..size], offset)?;
            Ok(reply(&buf[..n]))
        })
    }

    /// Runs `f` with the fd reads of `fh` go through, for a reply spliced from it; the handle
    /// stays open meanwhile.
    pub fn with_read_fd<R>(&self, fh: u64, f: impl FnOnce(BorrowedFd<'_>) -> R) -> SysResult<R> {
        let handle = self.handles.get(fh)?;
        let file = file_handle(&handle)?;
        Ok(f(self.current_fd(file)?))
    }

    /// The fd to read `file` through. A cached read-only handle opened on a lower object
    /// before that object was copied up sees the upper copy from then on (as the kernel's
    /// overlayfs does): the first read after the copy-up opens the upper copy, later ones
    /// reuse it. A passthrough handle reads its own fd, as the kernel does for it.
    fn current_fd<'a>(&self, file: &'a FileHandle) -> SysResult<BorrowedFd<'a>> {
        if !self.stack.has_upper
            || self.stack.is_upper(file.layer)
            || matches!(file.data_path, DataPath::Passthrough(_))
        {
            return Ok(file.fd.as_fd());
        }
        if let Some(fd) = file.moved_up.get() {
            return Ok(fd.as_fd());
        }
        let fd = {
            let state = file.node.read();
            if !self.stack.is_upper(state.top().layer) || state.objects.metacopy_data().is_some() {
                return Ok(file.fd.as_fd());
            }
            sys::reopen(state.top_fd()?.as_fd(), OFlags::RDONLY)?
        };
        Ok(file.moved_up.get_or_init(|| fd).as_fd())
    }

    pub fn release(&self, fh: u64) {
        if let Some(handle) = self.handles.remove(fh)
            && let Handle::File(file) = &*handle
            && let DataPath::Cached = file.data_path
        {
            self.cached_open_closed(&file.node);
        }
    }

    pub fn opendir(&self, id: u64) -> SysResult<u64> {
        let node = self.node(id)?;
        if !node.is_dir() {
            return Err(Errno::NOTDIR);
        }
        let dir = DirHandle {
            node,
            entries: Mutex::new(None),
        };
        Ok(self.handles.insert(Handle::Dir(Arc::new(dir))))
    }

    /// The merged listing of an open directory, `.` and `..` first.
    pub fn dir_entries(&self, dir: &DirHandle) -> SysResult<Arc<Vec<MergedEntry>>> {
        let mut cached = dir.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entries) = &*cached {
            return Ok(entries.clone());
        }
        let node = &dir.node;
        let merged = {
            let state = node.read();
            readdir::list(&self.stack, &state.layer_fds())?
        };
        let mut all = Vec::with_capacity(merged.len() + 2);
        all.push(MergedEntry {
            name: OsString::from("."),
            file_type: libc::S_IFDIR,
            ino: node.ino,
        });
        all.push(MergedEntry {
            name: OsString::from(".."),
            file_type: libc::S_IFDIR,
            ino: self.parent_ino(node),
        });
        all.extend(merged);
        let all = Arc::new(all);
        *cached = Some(all.clone());
        Ok(all)
    }

    pub fn dir_handle(&self, fh: u64) -> SysResult<Arc<DirHandle>> {
        match &*self.handles.get(fh)? {
            Handle::Dir(dir) => Ok(dir.clone()),
            Handle::File(_) => Err(Errno::NOTDIR),
        }
    }
}

impl Overlay {
    fn writable_file(&self, fh: u64) -> SysResult<Arc<Handle>> {
        let handle = self.handles.get(fh)?;
        file_handle(&handle)?;
        Ok(handle)
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> SysResult<u32> {
        let handle = self.writable_file(fh)?;
        let file = file_handle(&handle)?;
        if file.clear_sgid.swap(false, Ordering::Relaxed) {
            self.clear_sgid(file.fd.as_fd())?;
        }
        let n = sys::pwrite(file.fd.as_fd(), data, offset)?;
        Ok(n as u32)
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> SysResult<()> {
        let handle = self.handles.get(fh)?;
        if self.volatile {
            return Ok(());
        }
        match &*handle {
            Handle::File(f) => sys::fsync(f.fd.as_fd(), datasync),
            Handle::Dir(d) => {
                let state = d.node.read();
                if !self.stack.is_upper(state.top().layer) {
                    return Ok(());
                }
                let dir = sys::reopen(state.top_fd()?.as_fd(), OFlags::RDONLY | OFlags::DIRECTORY)?;
                sys::fsync(dir.as_fd(), datasync)
            }
        }
    }

    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> SysResult<()> {
        let handle = self.writable_file(fh)?;
        sys::fallocate(file_handle(&handle)?.fd.as_fd(), mode, offset, length)
    }

    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> SysResult<i64> {
        let handle = self.handles.get(fh)?;
        let file = file_handle(&handle)?;
        let pos = sys::lseek(self.current_fd(file)?, offset, whence)?;
        Ok(pos as i64)
    }

    pub fn copy_file_range(
        &self,
        fh_in: u64,
        off_in: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
    ) -> SysResult<u32> {
        let input = self.handles.get(fh_in)?;
        let output = self.handles.get(fh_out)?;
        let (input, output) = (file_handle(&input)?, file_handle(&output)?);
        let len = len.min(u32::MAX as u64 & !0xfff) as usize;
        let input_fd = self.current_fd(input)?;
        let n = sys::copy_file_range(input_fd, off_in, output.fd.as_fd(), off_out, len)?;
        Ok(n as u32)
    }

    /// create(2): a new file in the upper, opened with `flags`.
    pub fn create(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        mode: u32,
        flags: i32,
        caller: Caller,
        make_backing: MakeBacking<'_>,
    ) -> SysResult<(crate::overlay::Entry, Opened)> {
        let object = crate::request::NewObject::File { mode, flags };
        let (entry, fd) = self.create_object(parent, name, object, caller)?;
        let node = self.node(entry.id)?;
        let fd = fd.ok_or(Errno::IO)?;
        let layer = node.read().top().layer;
        Ok((
            entry,
            self.register_open(node, layer, fd, false, make_backing),
        ))
    }
}
