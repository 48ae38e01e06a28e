//! ovlfs: a userspace overlay filesystem on FUSE.
//!
//! The modules form layers; each uses only the ones below it (docs/design.md draws the graph).
//! Kernel counterparts in fs/overlayfs are named where there is one.

// Request adapter: the command line, the FUSE session, the request dispatcher.
pub mod fs; // the `fuser::Filesystem` impl: one thin call per request
pub mod mount; // session, daemonizing, signals (super.c's mount side)
pub mod options; // argv and `-o` parsing into a validated `Config` (params.c)

// Operations on the mounted overlay: `impl Overlay` blocks, one concern each.
pub mod attr; // setattr (inode.c)
pub mod copy_up; // copying a lower object up through the workdir (copy_up.c)
pub mod dir; // create, mkdir, mknod, symlink, link, unlink, rmdir, rename (dir.c)
pub mod file; // open, read, write, fsync and directory handles (file.c)
pub mod hardlinks; // keeping hard links linked across copy-up
pub mod passthrough; // choosing the data path of an open file
pub mod reclaim; // the thread keeping node fds under the open-file limit
pub mod xattrs; // extended attributes through the mount (xattrs.c)

// The mount's state: nodes, handles and the layers they point into.
pub mod fdbudget; // fds held by nodes, counted against the open-file limit
pub mod handles; // open file and directory handles
pub mod inode; // the node table: node id ↔ node, lookup counts (inode.c)
pub mod layer; // one layer's root, device and inode numbering
pub mod linkmap; // the multi-link inodes of a layer and their paths
pub mod lookup; // resolving a name across layers (namei.c)
pub mod overlay; // `Overlay`: the state of one mount, attributes
pub mod readdir; // merged directory listings (readdir.c)
pub mod workdir; // the workdir lock and staging objects before they appear

// The on-disk format and pure rules.
pub mod config; // the validated configuration
pub mod idmap; // uid/gid mapping and squashing
pub mod killpriv; // when a write clears setgid
pub mod request; // who asks, and what to make
pub mod stat_override; // owners and modes kept in override_stat xattrs
pub mod whiteout; // whiteouts, opaque directories, redirects, private xattrs

// Every raw syscall and the only `unsafe`.
pub mod sys;
