//! Unknown `-o` options. fuse-overlayfs ignores them with a warning and so does ovlfs, except
//! when one looks like a mistake that would silently give another mount than intended: a
//! near-miss of a known name (`uperdir=` would leave the mount read-only), a name with spaces
//! around it (`-o "a, b"`), an unknown layer-like name (`lowerdirs=`), or the rest of a path
//! cut at an unescaped comma (`upperdir=/x/u,v` where `/x/u,v` exists: `/x/u` would be used).

#[allow(unused_imports)]
use super::*;

/// Every option name the parser accepts (besides `x-*`), for suggestions.
pub(super) const KNOWN: &[&str] = &[
    "lowerdir",
    "lowerdir+",
    "datadir+",
    "upperdir",
    "workdir",
    "whiteout",
    "userxattr",
    "metacopy",
    "passthrough",
    "supervisor",
    "threads",
    "threaded",
    "fsync",
    "writeback",
    "volatile",
    "timeout",
    "squash_to_root",
    "squash_to_uid",
    "squash_to_gid",
    "uidmapping",
    "gidmapping",
    "static_nlink",
    "noacl",
    "ino32_t",
    "debug",
    "xino",
    "xattr_permissions",
    "context",
    "plugins",
    "fast_ino",
    "noxattrs",
    "redirect_dir",
    "comment",
];

fn known_names() -> impl Iterator<Item = &'static str> {
    KNOWN
        .iter()
        .chain(FUSE_FLAGS)
        .chain(FUSE_VALUED)
        .chain(FSTAB_ONLY)
        .copied()
}

/// Names that never take a value: a `name=value` is no typo of them.
fn flag_only(name: &str) -> bool {
    NO_VALUE.contains(&name) || FUSE_FLAGS.contains(&name) || FSTAB_ONLY.contains(&name)
}

/// Errors for an unknown option that looks like a mistake; `Ok` means "ignore it".
pub(super) fn check(
    field: &[u8],
    name: &str,
    value: Option<&[u8]>,
    after_path: Option<&(&[u8], PathBuf)>,
) -> Result<()> {
    let shown = quote(field);
    const ESCAPE: &str = "a comma inside a path must be escaped as \"\\,\"";
    if name.is_empty() {
        return Err(OptionsError::new(format_args!(
            "option {shown} has no name"
        )));
    }
    if name.trim() != name {
        return Err(OptionsError::new(format_args!(
            "option {shown} has spaces around its name (separate options with commas only)"
        )));
    }
    if name.contains('/') {
        return Err(OptionsError::new(format_args!(
            "unknown option {shown} looks like part of a path: {ESCAPE}"
        )));
    }
    if let Some(known) = suggestion(name, value.is_some()) {
        return Err(OptionsError::new(format_args!(
            "unknown option {shown} (did you mean \"{known}\"?)"
        )));
    }
    // `upperdir=/x/u,v` with a directory `/x/u,v`: the path was cut at the comma. (Without
    // such a path, `v` is just an unknown option, which fuse-overlayfs ignores too.)
    if let Some((path_option, path)) = after_path {
        let mut joined = path.clone().into_os_string();
        joined.push(",");
        joined.push(std::ffi::OsStr::from_bytes(field));
        if fs::symlink_metadata(&joined).is_ok() {
            return Err(OptionsError::new(format_args!(
                "unknown option {shown} after {}: {} exists, and {ESCAPE}",
                quote(path_option),
                quote(joined.as_bytes())
            )));
        }
    }
    if layer_like(name) {
        return Err(OptionsError::new(format_args!(
            "unknown option {shown} (the layers are lowerdir=, upperdir= and workdir=)"
        )));
    }
    Ok(())
}

fn layer_like(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    let n = n.trim_end_matches('+');
    ["dir", "dirs"].iter().any(|s| n.ends_with(s))
        || ["lower", "upper", "work"].iter().any(|p| n.starts_with(p))
}

/// The known name `name` is a likely typo of: within one edit for names of 4-5 letters, two
/// for longer ones, ignoring case. Short names (`uid`) are too close to everything.
fn suggestion(name: &str, has_value: bool) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    let limit = match lower.chars().count() {
        0..=3 => 0,
        4..=5 => 1,
        _ => 2,
    };
    known_names()
        .filter(|k| !(has_value && flag_only(k)))
        .map(|k| (edit_distance(&lower, k), k))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
/// adjacent characters each count one.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("uperdir", "upperdir"), 1);
        assert_eq!(edit_distance("uppredir", "upperdir"), 1);
        assert_eq!(edit_distance("lowerdirs", "lowerdir"), 1);
        assert_eq!(edit_distance("static_nlnk", "static_nlink"), 1);
        assert_eq!(edit_distance("", "ro"), 2);
        assert_eq!(edit_distance("abc", "abc"), 0);
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggestion("uperdir", true), Some("upperdir"));
        assert_eq!(suggestion("Upperdir", true), Some("upperdir"));
        assert_eq!(suggestion("wrokdir", true), Some("workdir"));
        assert_eq!(suggestion("volatil", false), Some("volatile"));
        assert_eq!(suggestion("squash_to_uuid", true), Some("squash_to_uid"));
        assert_eq!(suggestion("nosiud", false), Some("nosuid"));
        // A value rules out the flags: "other=1" is no "owner".
        assert_eq!(suggestion("other", true), None);
        assert_eq!(suggestion("nosiud", true), None);
        // Too short to judge, or too far from anything.
        assert_eq!(suggestion("uid", true), None);
        assert_eq!(suggestion("index", true), None);
        assert_eq!(suggestion("mystery", false), None);
        assert_eq!(suggestion("max_threads", true), None);
        assert_eq!(suggestion("max_write", true), None);
        assert_eq!(suggestion("clone_fd", false), None);
    }

    #[test]
    fn layer_like_names() {
        for n in [
            "uperdir",
            "lowerdirs",
            "LOWERDIR",
            "datadir",
            "lower",
            "upper_dir",
            "workdir2",
        ] {
            assert!(layer_like(n), "{n}");
        }
        for n in ["mystery", "index", "diratime", "redirect"] {
            assert!(!layer_like(n), "{n}");
        }
    }

    /// Every name in the suggestion list is one the parser accepts: the list cannot drift.
    #[test]
    fn known_names_are_accepted() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().to_str().unwrap();
        for name in known_names() {
            let mut raw = Raw::default();
            let field = if flag_only(name) || name == "fast_ino" {
                name.to_owned()
            } else {
                let value = match name {
                    "whiteout" => "xattr",
                    "passthrough" | "xino" | "supervisor" => "auto",
                    "redirect_dir" => "off",
                    "threads" | "timeout" | "max_read" | "blksize" => "1",
                    "squash_to_uid" | "squash_to_gid" => "1",
                    "threaded" | "fsync" | "writeback" | "xattr_permissions" => "0",
                    "uidmapping" | "gidmapping" => "0:0:1",
                    "lowerdir" | "lowerdir+" | "datadir+" | "upperdir" | "workdir" => p,
                    "metacopy" => "on",
                    _ => "x",
                };
                format!("{name}={value}")
            };
            let r = parse_option(&mut raw, field.as_bytes(), None);
            r.unwrap_or_else(|e| panic!("{field}: {e}"));
            let unknown = ["xino", "context", "plugins", "fast_ino"]
                .iter()
                .chain(&["noxattrs", "blksize"])
                .any(|k| *k == name);
            assert_eq!(
                !raw.ignored_options.is_empty(),
                unknown,
                "{field}: {:?}",
                raw.ignored_options
            );
        }
    }
}
