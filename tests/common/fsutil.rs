//! xattrs, readdir and errno helpers.

use super::*;

// ---------------------------------------------------------------------------------------------
// xattrs, readdir, errno helpers
// ---------------------------------------------------------------------------------------------

pub fn errno<T>(r: &io::Result<T>) -> Option<i32> {
    r.as_ref().err().and_then(|e| e.raw_os_error())
}

pub fn errno_name(e: Option<i32>) -> String {
    match e {
        None => "Ok".into(),
        Some(n) => io::Error::from_raw_os_error(n).to_string(),
    }
}

/// lgetxattr (does not follow symlinks).
pub fn get_xattr(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    loop {
        let n = rustix::fs::lgetxattr_query(path, name)?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; n];
        match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// llistxattr (does not follow symlinks), names in listing order.
pub fn list_xattrs(path: &Path) -> io::Result<Vec<String>> {
    loop {
        let n = rustix::fs::llistxattr_query(path)?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; n];
        match rustix::fs::llistxattr(path, &mut buf[..]) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf
                    .split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect());
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// lsetxattr, returning the error.
pub fn try_set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).map_err(Into::into)
}

/// lsetxattr, panicking on failure (fixtures).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    try_set_xattr(path, name, value)
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
    Unknown,
}

impl Kind {
    pub fn of(ft: fs::FileType) -> Kind {
        if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_socket() {
            Kind::Socket
        } else if ft.is_char_device() {
            Kind::CharDev
        } else if ft.is_block_device() {
            Kind::BlockDev
        } else {
            Kind::Unknown
        }
    }

    fn of_dtype(ft: rustix::fs::FileType) -> Kind {
        use rustix::fs::FileType as T;
        match ft {
            T::RegularFile => Kind::File,
            T::Directory => Kind::Dir,
            T::Symlink => Kind::Symlink,
            T::Fifo => Kind::Fifo,
            T::Socket => Kind::Socket,
            T::CharacterDevice => Kind::CharDev,
            T::BlockDevice => Kind::BlockDev,
            _ => Kind::Unknown,
        }
    }
}

/// One raw readdir entry (including `.` and `..`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEnt {
    pub name: OsString,
    pub ino: u64,
    /// `Kind::Unknown` for DT_UNKNOWN.
    pub d_type: Kind,
}

/// The raw getdents listing of a directory, `.` and `..` included, in the order returned.
pub fn read_dir_raw(dir: &Path) -> io::Result<Vec<DirEnt>> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = rustix::fs::Dir::new(fd)?;
    let mut v = Vec::new();
    while let Some(e) = d.read() {
        let e = e?;
        v.push(DirEnt {
            name: OsString::from_vec(e.file_name().to_bytes().to_vec()),
            ino: e.ino(),
            d_type: Kind::of_dtype(e.file_type()),
        });
    }
    Ok(v)
}

/// Names in a directory (without `.`/`..`), sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// For every directory under `root` (root included, relative path "" for it), its raw readdir
/// listing. Does not follow symlinks.
pub fn readdir_tree(root: &Path) -> BTreeMap<PathBuf, Vec<DirEnt>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = root.join(&rel);
        let ents = read_dir_raw(&abs).unwrap_or_else(|e| panic!("readdir {}: {e}", abs.display()));
        for e in &ents {
            if e.name == "." || e.name == ".." {
                continue;
            }
            let child = rel.join(&e.name);
            let md = fs::symlink_metadata(root.join(&child))
                .unwrap_or_else(|err| panic!("lstat {}: {err}", root.join(&child).display()));
            if md.is_dir() {
                stack.push(child);
            }
        }
        out.insert(rel, ents);
    }
    out
}
