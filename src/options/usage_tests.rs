//! Unit tests of --help and --version.

use super::*;

fn parse(list: &[&str]) -> Result<Action> {
    parse_args(list.iter().map(OsString::from))
}

#[test]
fn help_and_version() {
    assert_eq!(parse(&["-h"]).unwrap(), Action::Help);
    assert_eq!(parse(&["--help"]).unwrap(), Action::Help);
    assert_eq!(parse(&["-V"]).unwrap(), Action::Version);
    assert_eq!(parse(&["--version"]).unwrap(), Action::Version);
    // Wins over a command line that would otherwise fail validation.
    assert_eq!(
        parse(&["-o", "lowerdir=/nonexistent", "/x", "--help"]).unwrap(),
        Action::Help
    );
    assert_eq!(version_line(), VERSION_LINE);
    assert!(VERSION_LINE.starts_with("ovlfs: version "));
    assert!(!VERSION_LINE.contains('\n'));
    assert!(version().starts_with(&format!("{VERSION_LINE}\n")));
}

#[test]
fn usage_lists_every_option() {
    let u = usage();
    assert!(u.ends_with('\n'));
    for name in [
        "lowerdir=",
        "lowerdir+=",
        "upperdir=",
        "workdir=",
        "whiteout=",
        "userxattr",
        "passthrough=",
        "supervisor=",
        "threads=",
        "uidmapping=",
        "gidmapping=",
        "squash_to_root",
        "squash_to_uid=",
        "squash_to_gid=",
        "static_nlink",
        "noacl",
        "timeout=",
        "threaded=",
        "fsync=",
        "volatile",
        "writeback=",
        "ino32_t",
        "debug",
        "xattr_permissions=",
        "xino=",
        "context=",
        "fast_ino",
        "plugins=",
        "-f",
        "-d",
        "-o",
        "--help",
        "--version",
    ] {
        assert!(u.contains(name), "usage lacks {name}");
    }
    for name in FUSE_FLAGS.iter().chain(FUSE_VALUED) {
        assert!(u.contains(name), "usage lacks {name}");
    }
}

/// Every name the parser accepts is in the option table (so in --help and the man page),
/// and every name in the table is one the parser accepts.
#[test]
fn option_table_matches_the_parser() {
    let documented = help::documented_names();
    let accepted: Vec<&str> = unknown::KNOWN
        .iter()
        .chain(FUSE_FLAGS)
        .chain(FUSE_VALUED)
        .chain(NO_VALUE)
        .copied()
        // fstab comments are dropped silently.
        .filter(|n| *n != "comment")
        .collect();
    for name in &accepted {
        assert!(documented.contains(name), "option table lacks {name}");
    }
    for name in &documented {
        if name.starts_with('-') {
            continue;
        }
        assert!(accepted.contains(name), "option table has unknown {name}");
    }
    for flag in [
        "-f",
        "-d",
        "--debug",
        "-s",
        "-o",
        "-h",
        "--help",
        "-V",
        "--version",
    ] {
        assert!(documented.contains(&flag), "option table lacks {flag}");
    }
}

/// The help text keeps what it listed before it was rendered from the table.
#[test]
fn usage_keeps_its_sections() {
    let u = usage();
    for heading in [
        "usage: ovlfs [-f] [-d]",
        "       ovlfs SOURCE MERGED -o OPT[,OPT...]",
        "\nflags:\n",
        "\nlayers:\n",
        "\novlfs options:\n",
        "\nfuse-overlayfs options:\n",
        "\nFUSE / mount options, passed to the kernel mount:\n",
        "fstab-only options",
        "Unmount with `fusermount3 -u MERGED`.",
    ] {
        assert!(u.contains(heading), "usage lacks {heading:?}:\n{u}");
    }
}
