//! The `ovlfs(8)` man page in roff, rendered from the option table `--help` is rendered from
//! (src/options/help.rs) plus the sections only the man page has. The committed
//! `ovlfs.8` at the top of the repository is its output (`cargo run --example manpage >
//! ovlfs.8`); a unit test fails when the two differ, so a changed option description cannot
//! leave the man page behind.

use crate::options::help::{self, OptionDoc};

/// Escapes text for roff: backslashes, hyphen-minus (so options copy and paste as typed),
/// `` `code` `` spans in bold, and a leading `.` or `'` (which would start a request).
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut bold = false;
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            '`' => {
                out.push_str(if bold { "\\fR" } else { "\\fB" });
                bold = !bold;
            }
            _ => out.push(c),
        }
    }
    if bold {
        out.push_str("\\fR");
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// A paragraph's source lines: wrapped near 80 columns (roff fills them anyway; short lines
/// keep diffs readable), each escaped.
fn lines(out: &mut String, paragraph: &str) {
    let mut line = String::new();
    for word in paragraph.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > 78 {
            out.push_str(&text(&line));
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&text(&line));
        out.push('\n');
    }
}

fn section(out: &mut String, title: &str) {
    out.push_str(&format!(".SH {}\n", title.to_uppercase()));
}

fn subsection(out: &mut String, title: &str) {
    out.push_str(&format!(".SS \"{title}\"\n"));
}

fn paragraphs(out: &mut String, paras: &[&str]) {
    for p in paras {
        out.push_str(".PP\n");
        lines(out, p);
    }
}

/// A tagged paragraph: `tag` in bold (each `, `-separated part), then `body`.
fn item(out: &mut String, tag: &str, body: &str) {
    out.push_str(".TP\n");
    let parts: Vec<String> = tag
        .split(", ")
        .map(|p| format!("\\fB{}\\fR", text(p)))
        .collect();
    out.push_str(&parts.join(", "));
    out.push('\n');
    lines(out, body);
}

/// A literal block (commands, configuration), indented.
fn example(out: &mut String, intro: &str, literal: &[&str]) {
    out.push_str(".PP\n");
    lines(out, intro);
    out.push_str(".PP\n.RS 4\n.nf\n");
    for l in literal {
        out.push_str(&text(l));
        out.push('\n');
    }
    out.push_str(".fi\n.RE\n");
}

fn options(out: &mut String) {
    section(out, "Options");
    for s in help::SECTIONS {
        subsection(out, s.man_title);
        for OptionDoc { syntax, help } in s.options {
            item(out, syntax, help);
        }
    }
    subsection(out, "Other options");
    paragraphs(out, help::NOTES);
}

const DESCRIPTION: &[&str] = &[
    "ovlfs merges N read-only lower directory trees with one writable upper tree at MERGED \
     the way the kernel's overlayfs does, for users who cannot use the kernel's: users \
     without root (rootless containers), kernels without overlay, nested setups the kernel \
     refuses. It takes the command line of fuse-overlayfs(1) and serves as podman's and \
     buildah's `mount_program`. The second form of the synopsis is how mount(8) and \
     mount.fuse3(8) call a mount helper.",
    "Without `-f`, ovlfs forks and the command returns (exit status 0) only once the mount \
     is live, as containers/storage expects; the daemon then detaches from the terminal and \
     logs to syslog. It exits by itself when the filesystem is unmounted.",
    "Every error in the command line or the layer setup (a missing layer, an upper inside a \
     lower, a workdir on another filesystem than the upper, a malformed mapping, a workdir \
     another mount is using) prints one line naming the problem and exits with status 1, \
     without creating or changing anything on disk. Unprivileged mounts go through \
     fusermount3(1).",
];

const FORMAT: &[(&str, &str)] = &[
    (
        "NS",
        "The xattr namespace of the markers below: `trusted` when the daemon holds \
         CAP_SYS_ADMIN and `userxattr` is not given, else `user` (the kernel's userxattr \
         format).",
    ),
    (
        "whiteouts",
        "A deleted name that a lower layer shows is recorded in the upper as a 0/0 character \
         device (`whiteout=chardev`, the kernel's form; hard links of \
         WORKDIR/work/#ovlfs.whiteout), or as a zero-size mode 0600 file with \
         `NS.overlay.whiteout=y` in a parent marked `NS.overlay.opaque=x` \
         (`whiteout=xattr`). Read in every layer: both forms, `user.overlay.whiteout` and \
         `trusted.overlay.whiteout`, and AUFS `.wh.NAME` entries as container image layers \
         carry them.",
    ),
    (
        "opaque directories",
        "A directory that hides the same directory in lower layers carries \
         `NS.overlay.opaque=y` (a new directory made where a lower one was deleted, or \
         inside a merged directory). Also read: `user.fuseoverlayfs.opaque=y` and a \
         `.wh..wh..opq` entry.",
    ),
    (
        "other xattrs",
        "`NS.overlay.redirect` (a renamed directory's lower part) is honoured, and \
         written with `redirect_dir=on`; `NS.overlay.ovlfs-ino` keeps an object's inode number across copy-up. With \
         `xattr_permissions=`, owners and modes are kept in \
         `security.fuseoverlayfs.override_stat`, `user.containers.override_stat` or \
         `user.fuseoverlayfs.override_stat` as UID:GID:MODE. Overlay-private xattrs are \
         never visible through the mount.",
    ),
    (
        "compatibility",
        "An upper written by ovlfs mounts with the kernel's overlayfs (same lowers, fresh \
         workdir) and shows the same tree; an upper written by the kernel mounts with ovlfs, \
         on the same workdir too: hard links the kernel copied up with `index=on` stay \
         joined (WORKDIR/index is read, never written).",
    ),
];

const EXIT_STATUS: &[(&str, &str)] = &[
    (
        "0",
        "Without `-f`: the mount is live (the daemon goes on serving it). With `-f`: the \
         filesystem was unmounted (fusermount3 -u, umount, or a termination signal). Also \
         after `--help` and `--version`.",
    ),
    (
        "1",
        "The command line or the layer setup is wrong, the workdir is in use by another \
         mount, or the mount itself failed; one line on stderr says why and nothing on disk \
         was changed. With `-f`, also when the session ended with an error.",
    ),
];

const SIGNALS: &[(&str, &str)] = &[
    (
        "SIGTERM, SIGINT, SIGHUP",
        "Unmount and exit with status 0. When the mount is busy (a file inside is open), it \
         is detached lazily instead (as umount -l) and the daemon exits half a second later; \
         what is still open inside then fails with ENOTCONN.",
    ),
    (
        "SIGKILL",
        "Under a supervisor (the default when daemonized, see supervisor=), a killed or \
         crashed worker is replaced at once and requests in flight are sent again (Linux 6.9 \
         or later): callers see no error. A killed supervisor, or a daemon without one, \
         leaves the mount point dead: new accesses fail with \"Transport endpoint is not \
         connected\" (files already open through passthrough may still read). Remove it with \
         `fusermount3 -u MERGED`; ovlfs names that command when it meets such a path.",
    ),
];

const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "RUST_LOG",
        "Refines what is logged, in env_logger's syntax (`RUST_LOG=debug`, \
         `RUST_LOG=ovlfs=debug,fuser=warn`); the default is warnings and errors, debug with \
         `-d` or `--debug`.",
    ),
    (
        "OVLFS_SYSLOG_SOCKET",
        "The datagram socket a detached daemon sends its log lines to instead of /dev/log \
         (for tests, or a syslog daemon listening elsewhere).",
    ),
];

const FILES: &[(&str, &str)] = &[
    (
        "WORKDIR/work",
        "Copy-up temp objects (`#ovlfs.PID.N`) and `#ovlfs.whiteout`, the device chardev \
         whiteouts are hard links of. Created if missing and emptied at every mount, once \
         the mount is live.",
    ),
    (
        "WORKDIR",
        "The daemon holds flock(2) on the workdir for the life of the mount: a second ovlfs \
         mount on it is refused (after waiting up to 2 seconds for a daemon whose mount was \
         just unmounted), naming the process holding it (see /proc/locks). No lock file is \
         created.",
    ),
    (
        "/sbin/mount.fuse.ovlfs",
        "The mount helper mount(8) runs for type fuse.ovlfs: a symlink to ovlfs, which then \
         takes mount(8)'s helper flags (`-s` sloppy, `-f` fake, `-n`, `-v`).",
    ),
    ("/dev/fuse", "The FUSE device."),
    (
        "/etc/fuse.conf",
        "`user_allow_other` there lets unprivileged users mount with `allow_other`.",
    ),
    (
        "/dev/log",
        "Where a detached daemon logs: RFC 3164 lines, facility daemon, tagged ovlfs[PID], \
         each naming the mount point. A request that panicked (it is answered with EIO, \
         the mount goes on) is logged at most 5 times a minute.",
    ),
];

fn tagged(out: &mut String, title: &str, items: &[(&str, &str)]) {
    section(out, title);
    for (tag, body) in items {
        item(out, tag, body);
    }
}

/// The whole man page.
pub fn render() -> String {
    let mut out = String::new();
    out.push_str(".\\\" Generated by `cargo run --example manpage`: edit src/manpage.rs and\n");
    out.push_str(".\\\" src/options/help.rs instead.\n");
    out.push_str(&format!(
        ".TH OVLFS 8 \"\" \"ovlfs {}\" \"System Administration\"\n",
        env!("CARGO_PKG_VERSION")
    ));
    section(&mut out, "Name");
    out.push_str(
        "ovlfs \\- userspace overlay filesystem on FUSE, a drop\\-in for fuse\\-overlayfs\n",
    );
    section(&mut out, "Synopsis");
    for (i, s) in help::SYNOPSIS.iter().enumerate() {
        if i > 0 {
            out.push_str(".br\n");
        }
        out.push_str(&format!("\\fBovlfs\\fR {}\n", text(s)));
    }
    section(&mut out, "Description");
    paragraphs(&mut out, DESCRIPTION);
    options(&mut out);
    tagged(&mut out, "On-disk format", FORMAT);
    tagged(&mut out, "Exit status", EXIT_STATUS);
    tagged(&mut out, "Signals", SIGNALS);
    tagged(&mut out, "Environment", ENVIRONMENT);
    tagged(&mut out, "Files", FILES);
    section(&mut out, "Examples");
    example(
        &mut out,
        "A read-write overlay of two lowers (the leftmost is the top), then its unmount:",
        &[
            "ovlfs -o lowerdir=/l1:/l2,upperdir=/u,workdir=/w /mnt/merged",
            "fusermount3 -u /mnt/merged",
        ],
    );
    example(
        &mut out,
        "In the foreground with every request logged:",
        &["ovlfs -f -d -o lowerdir=/l1:/l2,upperdir=/u,workdir=/w /mnt/m"],
    );
    example(
        &mut out,
        "As podman's and buildah's mount program, in /etc/containers/storage.conf (or \
         ~/.config/containers/storage.conf):",
        &[
            "[storage]",
            "driver = \"overlay\"",
            "",
            "[storage.options.overlay]",
            "mount_program = \"/usr/bin/ovlfs\"",
        ],
    );
    example(
        &mut out,
        "With mount(8), which runs /sbin/mount.fuse.ovlfs:",
        &[
            "mount -t fuse.ovlfs ovlfs /mnt/merged \\",
            "    -o lowerdir=/l1:/l2,upperdir=/u,workdir=/w",
        ],
    );
    example(
        &mut out,
        "The same mount in /etc/fstab:",
        &["ovlfs /mnt fuse.ovlfs lowerdir=/l1:/l2,upperdir=/u,workdir=/w 0 0"],
    );
    section(&mut out, "See also");
    out.push_str(
        "fuse\\-overlayfs(1), fusermount3(1), mount.fuse3(8), mount(8), fstab(5), \
         containers\\-storage.conf(5), podman(1)\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMITTED: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/ovlfs.8"));

    /// The committed page is what the table renders: regenerate it with
    /// `cargo run --example manpage > ovlfs.8`.
    #[test]
    fn committed_man_page_is_up_to_date() {
        let rendered = render();
        if rendered != COMMITTED {
            let at = rendered
                .lines()
                .zip(COMMITTED.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(rendered.lines().count().min(COMMITTED.lines().count()));
            panic!(
                "ovlfs.8 is stale (first difference at line {}): run `cargo run --example \
                 manpage > ovlfs.8`",
                at + 1
            );
        }
    }

    #[test]
    fn every_option_is_in_the_man_page() {
        let page = render();
        for name in help::documented_names() {
            assert!(page.contains(&text(name)), "man page lacks {name}");
        }
        for title in [
            "EXIT STATUS",
            "SIGNALS",
            "FILES",
            "EXAMPLES",
            "ON-DISK FORMAT",
        ] {
            assert!(page.contains(&format!(".SH {title}")), "{title}");
        }
    }

    #[test]
    fn escapes() {
        assert_eq!(text("-o a\\b"), "\\-o a\\eb");
        assert_eq!(text(".x"), "\\&.x");
        assert_eq!(text("run `fusermount3 -u`"), "run \\fBfusermount3 \\-u\\fR");
    }
}
