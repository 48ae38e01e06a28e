//! Running as a mount(8) helper. `mount -t fuse.ovlfs SOURCE DIR -o OPTS` (and an fstab line
//! of type `fuse.ovlfs`) runs `/sbin/mount.fuse.ovlfs SOURCE DIR [-sfnv] [-o OPTS]`; the
//! Debian package makes that a symlink to `ovlfs`, which then reads mount(8)'s flags: `-s`
//! is "sloppy" there (not single-threaded), `-f` is "fake" (check, do not mount), `-n` and
//! `-v` mean nothing to a FUSE mount. Finding the helper by its absolute path means no
//! `PATH` search: an older `ovlfs` elsewhere cannot be run by mistake.

#[allow(unused_imports)]
use super::*;

/// Whether the program was started under a mount helper's name (`mount.fuse.ovlfs`).
pub fn invoked_as_mount_helper(argv0: &std::ffi::OsStr) -> bool {
    Path::new(argv0)
        .file_name()
        .is_some_and(|n| n.as_bytes().starts_with(b"mount."))
}

/// The command line of a mount helper, as ovlfs's own.
#[derive(Debug, PartialEq, Eq)]
pub struct HelperArgs {
    /// `SOURCE DIR -o OPTS...`, for [`parse_args`].
    pub args: Vec<OsString>,
    /// `-f`: check the command line, but do not mount.
    pub fake: bool,
}

/// Translates a mount helper's argv (without argv\[0\]) into ovlfs's.
pub fn mount_helper_args<I: IntoIterator<Item = OsString>>(args: I) -> Result<HelperArgs> {
    let mut out = Vec::new();
    let mut fake = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let bytes = arg.as_bytes();
        match bytes {
            b"-o" => {
                let opts = args
                    .next()
                    .ok_or_else(|| OptionsError::new("option -o needs an argument"))?;
                out.push(arg);
                out.push(opts);
            }
            b"-t" => {
                // The type mount(8) was given (fuse.ovlfs): nothing to act on.
                args.next()
                    .ok_or_else(|| OptionsError::new("option -t needs an argument"))?;
            }
            b"-N" => {
                return Err(OptionsError::new(
                    "mount -N (mounting in another namespace) is not supported: run ovlfs \
                     inside that namespace (nsenter)",
                ));
            }
            b"-h" | b"--help" | b"-V" | b"--version" => out.push(arg),
            _ if bytes.starts_with(b"-o") => out.push(arg),
            _ if bytes.len() > 1
                && bytes[0] == b'-'
                && bytes[1..].iter().all(|c| b"sfnv".contains(c)) =>
            {
                // -s sloppy, -n no mtab, -v verbose: nothing to do for a FUSE mount.
                fake |= bytes.contains(&b'f');
            }
            _ if bytes.starts_with(b"-") && bytes.len() > 1 => {
                return Err(OptionsError::new(format_args!(
                    "unknown mount helper flag {} (mount.fuse.ovlfs takes -s, -f, -n, -v, -o)",
                    quote(bytes)
                )));
            }
            _ => out.push(arg),
        }
    }
    Ok(HelperArgs { args: out, fake })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn helper_name() {
        for name in [
            "/sbin/mount.fuse.ovlfs",
            "mount.fuse.ovlfs",
            "/x/mount.ovlfs",
        ] {
            assert!(invoked_as_mount_helper(name.as_ref()), "{name}");
        }
        for name in ["/usr/bin/ovlfs", "ovlfs", "/sbin/mount/ovlfs"] {
            assert!(!invoked_as_mount_helper(name.as_ref()), "{name}");
        }
    }

    #[test]
    fn mount_flags_are_mount_flags() {
        let h =
            mount_helper_args(os(&["ovlfs", "/m", "-n", "-s", "-v", "-o", "lowerdir=/l"])).unwrap();
        assert_eq!(h.args, os(&["ovlfs", "/m", "-o", "lowerdir=/l"]));
        assert!(!h.fake);
        let h = mount_helper_args(os(&[
            "ovlfs",
            "/m",
            "-fn",
            "-olowerdir=/l",
            "-t",
            "fuse.ovlfs",
        ]))
        .unwrap();
        assert_eq!(h.args, os(&["ovlfs", "/m", "-olowerdir=/l"]));
        assert!(h.fake);
    }

    #[test]
    fn unsupported_helper_flags_are_errors() {
        for bad in [
            &["ovlfs", "/m", "-N", "/proc/1/ns/mnt"][..],
            &["ovlfs", "/m", "-x"],
        ] {
            let e = mount_helper_args(os(bad)).unwrap_err();
            assert!(e.message().starts_with("ovlfs: "), "{e}");
            assert!(!e.message().contains('\n'), "{e}");
        }
        assert!(mount_helper_args(os(&["ovlfs", "/m", "-o"])).is_err());
    }
}
