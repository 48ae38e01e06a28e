//! ovlfs: a userspace overlay filesystem on FUSE.
//!
//! Module split after the kernel's fs/overlayfs: see DESIGN.md §5 and docs/design.md.
pub mod attr;
pub mod copy_up;
pub mod dir;
pub mod file;
pub mod fs;
pub mod hardlinks;
pub mod idmap;
pub mod inode;
pub mod killpriv;
pub mod layer;
pub mod logging;
pub mod lookup;
pub mod manpage;
pub mod mount;
pub mod options;
pub mod overlay;
pub mod passthrough;
pub mod readdir;
pub mod reclaim;
pub mod stat_override;
pub mod sys;
pub mod whiteout;
pub mod workdir;
pub mod xattrs;
