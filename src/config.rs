//! The validated configuration of a mount: what the command line asked for, with every path
//! checked. The options parser builds it; everything below the request adapter reads it.

use std::path::PathBuf;
use std::time::Duration;

/// How the upper layer records deletions (see docs/format.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutMode {
    /// 0/0 character devices (the kernel's native form).
    #[default]
    Chardev,
    /// Zero-size files tagged `NS.overlay.whiteout`, parent marked `NS.overlay.opaque=x`.
    Xattr,
    /// Chardev, falling back to xattr, then to AUFS `.wh.NAME`.
    Auto,
}

/// FUSE passthrough policy for file data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PassthroughMode {
    #[default]
    Auto,
    On,
    Off,
}

/// `xattr_permissions=`: where the owner and mode that users see are kept, when the upper's
/// real ones cannot hold them (rootless storage with `force_mask`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XattrPermissions {
    /// `0`: in the upper's real owner and mode.
    #[default]
    Off,
    /// `1`: in `security.fuseoverlayfs.override_stat`.
    Privileged,
    /// `2`: in `user.containers.override_stat` (or `user.fuseoverlayfs.override_stat` where
    /// the upper's root already uses that name).
    User,
}

/// One `ContainerID:HostID:Size` range of a uid/gid mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

/// What the user asked for, validated: every path exists and has the right type.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Lower layers, topmost first, as absolute canonical paths (symlinks resolved).
    pub lowerdirs: Vec<PathBuf>,
    /// Data-only lower layers, below `lowerdirs` (`lowerdir=A::B`, `datadir+=B`).
    pub datadirs: Vec<PathBuf>,
    /// Writable upper layer; `None` means a read-only mount.
    pub upperdir: Option<PathBuf>,
    /// Work directory on the upper's filesystem; `Some` exactly when `upperdir` is.
    pub workdir: Option<PathBuf>,
    /// The mountpoint, absolute.
    pub mountpoint: PathBuf,
    /// The SOURCE argument of the mount-helper form (shown as the fsname), if given.
    pub source: Option<String>,
    /// `-f`: stay in the foreground.
    pub foreground: bool,
    /// `-d`, `-o debug` (both imply foreground, as in libfuse) or `--debug` (does not).
    pub debug: bool,
    pub whiteout: WhiteoutMode,
    /// `-o userxattr`: use `user.overlay.*` even with CAP_SYS_ADMIN.
    pub userxattr: bool,
    /// `metacopy=on`: metadata-only copy-up of lower regular files.
    pub metacopy: bool,
    pub passthrough: PassthroughMode,
    /// Worker threads (`threads=N`; `threaded=0` means 1). `None`: from the core count.
    pub threads: Option<usize>,
    /// `supervisor=on|off`; `None`: on when daemonizing.
    pub supervisor: Option<bool>,
    /// Entry/attr cache timeout (`timeout=`; fuse-overlayfs's default is 1 s, ours is long).
    pub timeout: Option<Duration>,
    /// `fsync=0` or `volatile` turn this off.
    pub fsync: bool,
    pub volatile: bool,
    /// `writeback=0` disables the writeback cache.
    pub writeback: bool,
    pub uid_mapping: Vec<IdRange>,
    pub gid_mapping: Vec<IdRange>,
    pub squash_to_root: bool,
    pub squash_to_uid: Option<u32>,
    pub squash_to_gid: Option<u32>,
    pub static_nlink: bool,
    pub noacl: bool,
    pub ino32: bool,
    pub xattr_permissions: XattrPermissions,
    /// `redirect_dir=on`: a renamed directory with lower parts gets `overlay.redirect`
    /// instead of being copied up whole.
    pub redirect_dir: bool,
    /// Options passed through to the kernel mount as is (`allow_other`, `ro`, `nodev`, ...).
    pub fuse_options: Vec<String>,
    /// Options we accepted but do not act on (logged as warnings at mount time).
    pub ignored_options: Vec<String>,
}
