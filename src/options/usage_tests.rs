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
    assert!(VERSION_LINE.starts_with("ovlfs "));
    assert!(!VERSION_LINE.contains('\n'));
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
