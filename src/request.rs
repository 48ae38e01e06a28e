//! What a request asks for, as the operations take it: who asks, and what to make.

use std::ffi::OsStr;

/// Who sent a request, as FUSE reports it.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// What to create.
pub enum NewObject<'a> {
    File { mode: u32, flags: i32 },
    Dir { mode: u32 },
    Special { mode: u32, rdev: u64 },
    Symlink { target: &'a OsStr },
}
