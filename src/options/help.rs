//! The option reference: one table that both `--help` and the `ovlfs(8)` man page are
//! rendered from (the `manpage` module), so the two cannot drift apart.

/// One documented option (or a group of options sharing a description).
#[derive(Debug, Clone, Copy)]
pub struct OptionDoc {
    /// The option as typed; several options are separated by `, `.
    pub syntax: &'static str,
    /// What it does: plain text, one paragraph (wrapped by the renderer).
    pub help: &'static str,
}

/// A titled group of options.
#[derive(Debug, Clone, Copy)]
pub struct Section {
    /// The heading (`--help` shows it followed by a colon).
    pub title: &'static str,
    /// The man page's heading.
    pub man_title: &'static str,
    pub options: &'static [OptionDoc],
}

const fn opt(syntax: &'static str, help: &'static str) -> OptionDoc {
    OptionDoc { syntax, help }
}

/// The synopsis lines, without the program name.
pub const SYNOPSIS: &[&str] = &[
    "[-f] [-d] [--debug] [-s] [-o OPT[,OPT...]]... MERGED",
    "SOURCE MERGED -o OPT[,OPT...]",
    "--upgrade MERGED",
    "--help | --version",
];

/// What the program is, in one paragraph.
pub const DESCRIPTION: &str = "A userspace overlay filesystem (drop-in for fuse-overlayfs): merges read-only \
lower directories with a writable upper directory at MERGED. The second form is how \
mount(8) and mount.fuse3 call a mount helper.";

/// Every option, by section.
pub const SECTIONS: &[Section] = &[
    Section {
        title: "flags",
        man_title: "Flags",
        options: &[
            opt("-f", "stay in the foreground"),
            opt(
                "-d",
                "debug logging of every request to stderr (implies -f; RUST_LOG refines it)",
            ),
            opt(
                "--debug",
                "debug logging, without -f: once the daemon detaches, to syslog",
            ),
            opt("-s", "single-threaded (same as -o threads=1)"),
            opt(
                "-o OPTS",
                "comma-separated mount options (repeatable; also -oOPTS)",
            ),
            opt(
                "--upgrade MERGED",
                "serve the mount at MERGED with this binary from now on: its supervisor \
                 starts this binary as the worker and retires the old one; requests in flight \
                 are answered by the new one (see supervisor=)",
            ),
            opt("-h, --help", "print this help and exit"),
            opt(
                "-V, --version",
                "print the version, the commit and the features built in, and exit",
            ),
        ],
    },
    Section {
        title: "layers",
        man_title: "Layers",
        options: &[
            opt(
                "lowerdir=L1:L2:...",
                "lower layers, leftmost on top (at most 500); \\: escapes a colon inside a \
                 path, \\, a comma; each may be a symlink to the layer",
            ),
            opt(
                "lowerdir=L1:L2::D1::D2",
                "layers after a \"::\" are data-only: never listed or looked up, only \
                 read through the absolute redirects of metadata-only copies (composefs)",
            ),
            opt("lowerdir+=L", "append one lower layer (taken literally)"),
            opt(
                "datadir+=D",
                "append one data-only lower layer (taken literally), below every lowerdir",
            ),
            opt(
                "upperdir=U",
                "writable upper layer (without it the mount is read-only)",
            ),
            opt(
                "workdir=W",
                "work directory on the same filesystem as U, outside U; one mount at a time \
                 may use it",
            ),
        ],
    },
    Section {
        title: "ovlfs options",
        man_title: "ovlfs options",
        options: &[
            opt(
                "whiteout=chardev|xattr|auto",
                "how deletions are recorded in the upper (default chardev, the kernel's \
                 form; auto falls back to xattr, then to AUFS .wh. files)",
            ),
            opt(
                "userxattr",
                "use user.overlay.* xattrs even when privileged",
            ),
            opt(
                "metacopy=on|off",
                "on: chmod, chown and utimes of a lower file copy up its metadata only, the \
                 data on first write (the kernel reads this with metacopy=on; \
                 fuse-overlayfs cannot). Default off",
            ),
            opt(
                "passthrough=auto|on|off",
                "FUSE passthrough for file data (default auto: where the kernel allows it)",
            ),
            opt(
                "supervisor=auto|on|off",
                "a small process holds the FUSE connection and restarts the daemon's worker \
                 when it dies, without errors for the mount's users; needed by --upgrade \
                 (default auto: on unless -f)",
            ),
            opt(
                "threads=N",
                "worker threads (default: from the number of CPUs)",
            ),
            opt(
                "redirect_dir=on|off",
                "on: a renamed directory with lower parts gets an overlay.redirect xattr \
                 instead of being copied up whole (readable by the kernel's overlayfs with \
                 redirect_dir=on or follow only); off (default): the whole copy, which every \
                 reader understands. follow and nofollow mean off",
            ),
        ],
    },
    Section {
        title: "fuse-overlayfs options",
        man_title: "fuse-overlayfs options",
        options: &[
            opt(
                "uidmapping=C:H:N[:C:H:N...], gidmapping=C:H:N[:C:H:N...]",
                "ids C..C+N-1 on disk show as H..H+N-1 through the mount (ids given through \
                 the mount map back; ids on disk outside every range show as the overflow id)",
            ),
            opt("squash_to_root", "every file appears owned by root"),
            opt("squash_to_uid=UID", "every file appears owned by UID"),
            opt("squash_to_gid=GID", "every file appears owned by group GID"),
            opt("static_nlink", "report st_nlink 1 for directories"),
            opt("noacl", "no POSIX ACL support"),
            opt(
                "timeout=SECONDS",
                "entry/attribute cache timeout (fractions allowed; default one day)",
            ),
            opt("threaded=0|1", "threaded=0 means a single worker thread"),
            opt(
                "fsync=0|1",
                "fsync=0: do not sync copied-up data (default 1)",
            ),
            opt("volatile", "same as fsync=0"),
            opt(
                "writeback=0|1",
                "use the kernel writeback cache (default 1)",
            ),
            opt(
                "ino32_t",
                "report 32-bit inode numbers (accepted and ignored: the inode number is \
                 the FUSE node id)",
            ),
            opt("debug", "same as -d"),
            opt(
                "xattr_permissions=0|1|2",
                "keep owners and modes in an xattr instead of the upper's real ones: 1 in \
                 security.fuseoverlayfs.override_stat, 2 in user.containers.override_stat \
                 (default 0: off)",
            ),
            opt(
                "xino=on|off|auto, context=\"...\", fast_ino, plugins=..., noxattrs=N",
                "accepted for compatibility and ignored",
            ),
        ],
    },
    Section {
        title: "FUSE / mount options, passed to the kernel mount",
        man_title: "FUSE and mount options (passed to the kernel mount)",
        options: &[
            opt(
                "allow_other, allow_root",
                "let other users (or root) use the mount; unprivileged, /etc/fuse.conf must \
                 permit it (user_allow_other); the default as root",
            ),
            opt(
                "default_permissions",
                "always on: the kernel checks permissions",
            ),
            opt(
                "auto_unmount",
                "unmount when the daemon dies (unprivileged, only with allow_other or \
                 allow_root)",
            ),
            opt("ro, rw", "read-only or read-write mount"),
            opt(
                "dev, nodev, suid, nosuid, exec, noexec",
                "device files, setuid bits, execution (as root, dev and suid unless \
                 nodev or nosuid)",
            ),
            opt("atime, noatime, sync, async, dirsync", "as for any mount"),
            opt(
                "relatime, strictatime, diratime, nodiratime, lazytime, nonempty",
                "accepted and dropped (FUSE does not take them)",
            ),
            opt(
                "fsname=NAME",
                "the source the mount shows (default: SOURCE, else ovlfs)",
            ),
            opt(
                "subtype=NAME",
                "the mount shows as fuse.NAME (default ovlfs)",
            ),
            opt("max_read=N", "largest read request"),
            opt(
                "blksize=N",
                "accepted and ignored (only block-device FUSE mounts take it)",
            ),
        ],
    },
];

/// What follows the option list in `--help` (and the man page's option section).
pub const NOTES: &[&str] = &[
    "fstab-only options (defaults, noauto, nofail, _netdev, user, users, x-*, ...) are \
     dropped; other unknown options are ignored with a warning, except what looks like a \
     typo (a near-miss of a known name, a name with spaces around it, an unknown *dir \
     option) or like the rest of a path cut at an unescaped comma: those are errors.",
    "Unmount with `fusermount3 -u MERGED`.",
];

const WIDTH: usize = 80;
/// Column where descriptions start.
const DESC_COL: usize = 23;

/// Greedy word wrap of `text` to `width` columns, every line prefixed by `indent` spaces;
/// the first line's prefix is `first` instead.
fn wrap(out: &mut String, first: &str, indent: usize, text: &str, width: usize) {
    let mut line = first.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.len() + 1 + word.len() > width {
            out.push_str(line.trim_end());
            out.push('\n');
            line = " ".repeat(indent);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// Renders the `--help` text from the table.
pub(crate) fn render_usage() -> String {
    let mut out = String::new();
    for (i, line) in SYNOPSIS.iter().enumerate() {
        let lead = if i == 0 {
            "usage: ovlfs "
        } else {
            "       ovlfs "
        };
        out.push_str(lead);
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    wrap(&mut out, "", 0, DESCRIPTION, WIDTH);
    for section in SECTIONS {
        out.push('\n');
        out.push_str(section.title);
        out.push_str(":\n");
        for o in section.options {
            let first = format!("  {}", o.syntax);
            if first.len() < DESC_COL - 1 {
                let lead = format!("{first:<DESC_COL$}");
                wrap(&mut out, &lead, DESC_COL, o.help, WIDTH);
            } else {
                // Long syntax: on its own line(s), the description below.
                wrap(&mut out, "  ", 2, o.syntax, WIDTH);
                wrap(&mut out, &" ".repeat(DESC_COL), DESC_COL, o.help, WIDTH);
            }
        }
    }
    for note in NOTES {
        out.push('\n');
        wrap(&mut out, "", 0, note, WIDTH);
    }
    out
}

#[cfg(test)]
/// Every option name the table documents (the part of each syntax before `=`, `[` or `|`).
pub(crate) fn documented_names() -> Vec<&'static str> {
    SECTIONS
        .iter()
        .flat_map(|s| s.options)
        .flat_map(|o| o.syntax.split(", "))
        .map(|s| {
            let end = s.find(['=', '[', '|', ' ']).unwrap_or(s.len());
            // `lowerdir+=L`: the name is `lowerdir+`.
            &s[..end]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_keeps_within_width() {
        let mut out = String::new();
        wrap(&mut out, "  x ", 4, &"word ".repeat(40), 30);
        for line in out.lines() {
            assert!(line.len() <= 30, "{line:?}");
        }
        assert!(out.starts_with("  x word"));
    }

    #[test]
    fn usage_lines_fit_80_columns() {
        for line in render_usage().lines() {
            assert!(line.chars().count() <= WIDTH, "too long: {line:?}");
        }
    }

    #[test]
    fn names_parsed_from_syntax() {
        let names = documented_names();
        for n in [
            "-f",
            "--help",
            "lowerdir",
            "lowerdir+",
            "gidmapping",
            "context",
            "xino",
        ] {
            assert!(names.contains(&n), "{n} in {names:?}");
        }
    }
}
