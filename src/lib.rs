//! ovlfs: a userspace overlay filesystem on FUSE.
//!
//! The modules form layers; each uses only the ones below it (docs/design.md draws the graph).
//! Kernel counterparts in fs/overlayfs are named where there is one.

// Request adapter: the command line, the FUSE session, the request dispatcher.
pub(crate) mod fs; // the `fuser::Filesystem` impl: one thin call per request
pub mod manpage; // the ovlfs(8) page, rendered from the option table `--help` shows
pub mod mount; // session, daemonizing, signals (super.c's mount side)
pub mod options; // argv and `-o` parsing into a validated `Config` (params.c)
pub mod supervisor; // the process holding the FUSE connection; starts and restarts workers

// Operations on the mounted overlay: `impl Overlay` blocks, one concern each.
pub(crate) mod attr; // setattr (inode.c)
pub(crate) mod copy_up; // copying a lower object up through the workdir (copy_up.c)
pub(crate) mod dir; // create, mkdir, mknod, symlink, link, unlink, rmdir, rename (dir.c)
pub(crate) mod file; // open, read, write, fsync and directory handles (file.c)
pub(crate) mod hardlinks; // keeping hard links linked across copy-up
pub(crate) mod passthrough; // choosing the data path of an open file
pub(crate) mod reclaim; // the thread keeping node fds under the open-file limit
pub(crate) mod redirect; // directory renames that write overlay.redirect (dir.c)
pub(crate) mod takeover; // a new worker reopening the handles an earlier one handed out
pub(crate) mod xattrs; // extended attributes through the mount (xattrs.c)

// The mount's state: nodes, handles and the layers they point into.
pub(crate) mod fdbudget; // fds held by nodes, counted against the open-file limit
pub(crate) mod handles; // open file and directory handles
pub(crate) mod index; // the kernel's inode index (index=on), read
pub(crate) mod inode; // the node table: node id ↔ node, lookup counts (inode.c)
pub(crate) mod kernel_refs; // the kernel's node ids and handles, kept across worker restarts
pub(crate) mod layer; // one layer's root, device and inode numbering
pub(crate) mod linkmap; // the multi-link inodes of a layer and their paths
pub(crate) mod lookup; // resolving a name across layers (namei.c)
pub(crate) mod overlay; // `Overlay`: the state of one mount, attributes
pub(crate) mod readdir; // merged directory listings (readdir.c)
pub(crate) mod workdir; // the workdir lock and staging objects before they appear

// The on-disk format and pure rules.
pub(crate) mod config; // the validated configuration
pub(crate) mod idmap; // uid/gid mapping and squashing
pub(crate) mod killpriv; // when a write clears setgid
pub(crate) mod request; // who asks, and what to make
pub(crate) mod stat_override; // owners and modes kept in override_stat xattrs
pub(crate) mod whiteout; // whiteouts, opaque directories, redirects, private xattrs

// Support used at every layer: logging (stderr, or syslog once detached), raw syscalls.
pub mod logging; // stderr or syslog, rate-limited warnings
pub(crate) mod sys; // every raw syscall, behind safe functions

// What benchmarks and tools outside the crate use besides `options` and `mount`.
pub use inode::{Node, ROOT_ID};
pub use layer::LayerStack;
pub use lookup::lookup;
pub use overlay::Overlay;
pub use whiteout::XattrNamespace;
