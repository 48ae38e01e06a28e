//! Command line and `-o` option parsing into a validated [`Config`].
//!
//! Every user-facing error message of the program lives in this module. The command line is
//! that of fuse-overlayfs (DESIGN §2): `ovlfs [-f] [-d] [-o OPT[,OPT...]]... MERGED`, and the
//! mount helper form `ovlfs SOURCE MERGED -o OPTS` as mount.fuse3 calls it.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the upper layer records deletions (DESIGN §3).
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
    /// `-d`: debug logging (implies foreground, as libfuse does).
    pub debug: bool,
    pub whiteout: WhiteoutMode,
    /// `-o userxattr`: use `user.overlay.*` even with CAP_SYS_ADMIN.
    pub userxattr: bool,
    pub passthrough: PassthroughMode,
    /// Worker threads (`threads=N`; `threaded=0` means 1). `None`: from the core count.
    pub threads: Option<usize>,
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
    /// Options passed through to the kernel mount as is (`allow_other`, `ro`, `nodev`, ...).
    pub fuse_options: Vec<String>,
    /// Options we accepted but do not act on (logged as warnings at mount time).
    pub ignored_options: Vec<String>,
}

/// What the command line asks the program to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Help,
    Version,
    Mount(Box<Config>),
}

/// The one line `--version` prints.
pub const VERSION_LINE: &str = concat!("ovlfs ", env!("CARGO_PKG_VERSION"));

/// The kernel's limit on stacked lower layers (OVL_MAX_STACK).
pub const MAX_LOWER_LAYERS: usize = 500;

/// Upper bound for `threads=N`.
pub const MAX_THREADS: usize = 1024;

/// The one line `--version` prints (`ovlfs 0.1.0`).
pub fn version_line() -> &'static str {
    VERSION_LINE
}

/// The `--help` text, ending with a newline.
pub fn usage() -> &'static str {
    USAGE
}

const USAGE: &str = "\
usage: ovlfs [-f] [-d] [-o OPT[,OPT...]]... MERGED
       ovlfs SOURCE MERGED -o OPT[,OPT...]      (as a mount helper)

A userspace overlay filesystem (drop-in for fuse-overlayfs): merges read-only lower
directories with a writable upper directory at MERGED.

flags:
  -f                   stay in the foreground
  -d                   debug logging (implies -f)
  -s                   single-threaded (same as -o threads=1)
  -o OPTS              comma-separated mount options (repeatable; also -oOPTS)
  -h, --help           print this help and exit
  -V, --version        print the version and exit

layers:
  lowerdir=L1:L2:...   lower layers, leftmost on top (at most 500); \\: escapes a colon
                       inside a path, \\, a comma; each may be a symlink to the layer
  lowerdir+=L          append one lower layer (taken literally)
  upperdir=U           writable upper layer (without it the mount is read-only)
  workdir=W            work directory on the same filesystem as U, outside U

ovlfs options:
  whiteout=chardev|xattr|auto
                       how deletions are recorded in the upper (default chardev)
  userxattr            use user.overlay.* xattrs even when privileged
  passthrough=auto|on|off
                       FUSE passthrough for file data (default auto)
  threads=N            worker threads (default: from the number of CPUs)

fuse-overlayfs options:
  uidmapping=C:H:N[:C:H:N...]
  gidmapping=C:H:N[:C:H:N...]
                       map container ids C..C+N-1 to host ids H..H+N-1
  squash_to_root       every file appears owned by root
  squash_to_uid=UID    every file appears owned by UID
  squash_to_gid=GID    every file appears owned by group GID
  static_nlink         report st_nlink 1 for directories
  noacl                no POSIX ACL support
  timeout=SECONDS      entry/attribute cache timeout (fractions allowed)
  threaded=0|1         threaded=0 means a single worker thread
  fsync=0|1            fsync=0: do not sync copied-up data (default 1)
  volatile             same as fsync=0
  writeback=0|1        use the kernel writeback cache (default 1)
  ino32_t              report 32-bit inode numbers
  debug                same as -d
  xattr_permissions=N, xino=on|off|auto, context=\"...\", fast_ino, plugins=...,
  noxattrs=N, redirect_dir=...
                       accepted for compatibility and ignored

FUSE / mount options, passed to the kernel mount:
  allow_other, allow_root, default_permissions, auto_unmount, ro, rw, dev, nodev,
  suid, nosuid, exec, noexec, atime, noatime, relatime, strictatime, nodiratime,
  lazytime, sync, async, dirsync, nonempty, fsname=NAME, subtype=NAME, max_read=N,
  blksize=N

fstab-only options (defaults, noauto, nofail, _netdev, user, users, x-*, ...) are
dropped; other unknown options are ignored with a warning.
Unmount with `fusermount3 -u MERGED`.
";

/// A command line error: one line naming the problem, starting with `ovlfs: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionsError(String);

impl OptionsError {
    fn new(message: impl fmt::Display) -> OptionsError {
        OptionsError(format!("ovlfs: {message}"))
    }

    /// The full one-line message (what `Display` prints).
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OptionsError {}

type Result<T> = std::result::Result<T, OptionsError>;

/// Generic FUSE / VFS mount options passed through to the mount as they are.
const FUSE_FLAGS: &[&str] = &[
    "allow_other",
    "allow_root",
    "default_permissions",
    "auto_unmount",
    "ro",
    "rw",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "strictatime",
    "nodiratime",
    "lazytime",
    "sync",
    "async",
    "dirsync",
    "nonempty",
];

/// fstab-only options that mount(8) or mount.fuse3 may leave in the list: dropped silently.
const FSTAB_ONLY: &[&str] = &[
    "defaults", "auto", "noauto", "nofail", "_netdev", "user", "nouser", "users", "owner", "group",
];

/// Generic FUSE mount options with a value, passed through as they are.
const FUSE_VALUED: &[&str] = &["fsname", "subtype", "max_read", "blksize"];

/// Shows a user-supplied string quoted and escaped, so a message stays on one line.
fn quote(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

fn quote_path(path: &Path) -> String {
    quote(path.as_os_str().as_bytes())
}

/// `No such file or directory`, without the ` (os error 2)` std appends.
fn errno_text(err: &io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// The command line as scanned, before the file system is looked at.
#[derive(Debug, Default)]
struct Raw {
    lowers: Option<Vec<PathBuf>>,
    upper: Option<PathBuf>,
    work: Option<PathBuf>,
    positionals: Vec<OsString>,
    foreground: bool,
    debug: bool,
    whiteout: WhiteoutMode,
    userxattr: bool,
    passthrough: PassthroughMode,
    threads: Option<usize>,
    threaded: Option<bool>,
    single_threaded: bool,
    timeout: Option<Duration>,
    fsync: Option<bool>,
    volatile: bool,
    writeback: Option<bool>,
    uid_mapping: Vec<IdRange>,
    gid_mapping: Vec<IdRange>,
    squash_to_root: bool,
    squash_to_uid: Option<u32>,
    squash_to_gid: Option<u32>,
    static_nlink: bool,
    noacl: bool,
    ino32: bool,
    fuse_options: Vec<String>,
    ignored_options: Vec<String>,
}

/// Parses the command line (without argv\[0\]) and validates every path it names.
///
/// Nothing on disk is created or changed, whatever the outcome.
pub fn parse_args<I: IntoIterator<Item = OsString>>(args: I) -> Result<Action> {
    let mut raw = Raw::default();
    let mut args = args.into_iter();
    let mut only_positionals = false;
    while let Some(arg) = args.next() {
        let bytes = arg.as_bytes();
        if only_positionals || bytes.len() < 2 || bytes[0] != b'-' {
            raw.positionals.push(arg);
            continue;
        }
        match bytes {
            b"--" => only_positionals = true,
            b"-h" | b"--help" => return Ok(Action::Help),
            b"-V" | b"--version" => return Ok(Action::Version),
            b"-o" => match args.next() {
                Some(opts) => parse_option_list(&mut raw, opts.as_bytes())?,
                None => return Err(OptionsError::new("option -o needs an argument")),
            },
            _ if bytes.starts_with(b"-o") => parse_option_list(&mut raw, &bytes[2..])?,
            _ if bytes[1] != b'-' && bytes[1..].iter().all(|c| b"fds".contains(c)) => {
                for c in &bytes[1..] {
                    match c {
                        b'f' => raw.foreground = true,
                        b'd' => raw.debug = true,
                        _ => raw.single_threaded = true,
                    }
                }
            }
            _ => {
                return Err(OptionsError::new(format_args!(
                    "unknown flag {} (see ovlfs --help)",
                    quote(bytes)
                )));
            }
        }
    }
    validate(raw).map(|c| Action::Mount(Box::new(c)))
}

/// Splits an `-o` argument at commas, except inside `"..."` or after a backslash. Empty fields
/// are dropped; quotes and backslashes stay in the fields.
fn split_option_list(list: &[u8]) -> Vec<&[u8]> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut i = 0;
    while i < list.len() {
        match list[i] {
            b'\\' => i += 1,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                fields.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    fields.push(&list[start.min(list.len())..]);
    fields.retain(|f| !f.is_empty());
    fields
}

/// Removes backslash escapes: `\X` is `X` (a trailing lone backslash stays).
fn unescape(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut it = value.iter();
    while let Some(&c) = it.next() {
        if c == b'\\' {
            out.push(*it.next().unwrap_or(&b'\\'));
        } else {
            out.push(c);
        }
    }
    out
}

fn path_of(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(OsString::from_vec(bytes))
}

/// Splits a `lowerdir=` value at unescaped colons, unescaping each element.
fn split_lowerdir(value: &[u8]) -> Result<Vec<PathBuf>> {
    if value.is_empty() {
        return Err(OptionsError::new("lowerdir is empty"));
    }
    let mut elements: Vec<Vec<u8>> = vec![Vec::new()];
    let mut it = value.iter();
    while let Some(&c) = it.next() {
        match c {
            b'\\' => {
                let escaped = *it.next().unwrap_or(&b'\\');
                elements.last_mut().expect("never empty").push(escaped);
            }
            b':' => elements.push(Vec::new()),
            _ => elements.last_mut().expect("never empty").push(c),
        }
    }
    if elements.iter().any(Vec::is_empty) {
        return Err(OptionsError::new(format_args!(
            "lowerdir {} has an empty element (a \"::\" or a leading or trailing \":\"; \
             data-only layers are not supported)",
            quote(value)
        )));
    }
    check_layer_count(elements.len())?;
    Ok(elements.into_iter().map(path_of).collect())
}

fn check_layer_count(count: usize) -> Result<()> {
    if count > MAX_LOWER_LAYERS {
        return Err(OptionsError::new(format_args!(
            "too many lower layers in lowerdir: {count} (at most {MAX_LOWER_LAYERS})"
        )));
    }
    Ok(())
}

/// Parses one `-o` argument into `raw`.
fn parse_option_list(raw: &mut Raw, list: &[u8]) -> Result<()> {
    for field in split_option_list(list) {
        parse_option(raw, field)?;
    }
    Ok(())
}

/// The value of an option, required to be UTF-8 (everything but paths).
fn text<'a>(name: &str, value: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(value).map_err(|_| {
        OptionsError::new(format_args!(
            "invalid value {} for {name}= (not UTF-8)",
            quote(value)
        ))
    })
}

fn bad_value(name: &str, value: &[u8], expected: &str) -> OptionsError {
    OptionsError::new(format_args!(
        "invalid value {} for {name}= (expected {expected})",
        quote(value)
    ))
}

/// A decimal number of ASCII digits only (no sign, no spaces) that fits in a u32.
fn parse_u32(value: &str) -> Option<u32> {
    if value.is_empty() || !value.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

fn parse_bool01(name: &str, value: &[u8]) -> Result<bool> {
    match value {
        b"0" => Ok(false),
        b"1" => Ok(true),
        _ => Err(bad_value(name, value, "0 or 1")),
    }
}

fn parse_timeout(value: &[u8]) -> Result<Duration> {
    let bad = || bad_value("timeout", value, "a non-negative number of seconds");
    let text = std::str::from_utf8(value).map_err(|_| bad())?;
    // Only plain decimal notation: no sign, "inf", "nan" or exponents.
    if text.is_empty()
        || !text.bytes().all(|c| c.is_ascii_digit() || c == b'.')
        || !text.bytes().any(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let secs: f64 = text.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// `ContainerID:HostID:Size` triples joined by `:`, optionally with one leading `:`.
fn parse_mapping(name: &str, value: &[u8]) -> Result<Vec<IdRange>> {
    let text = text(name, value)?;
    let body = text.strip_prefix(':').unwrap_or(text);
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let fields: Vec<&str> = body.split(':').collect();
    if !fields.len().is_multiple_of(3) {
        return Err(OptionsError::new(format_args!(
            "invalid {name}= {}: expected ContainerID:HostID:Size triples, got {} numbers",
            quote(value),
            fields.len()
        )));
    }
    let mut ranges = Vec::with_capacity(fields.len() / 3);
    for triple in fields.chunks(3) {
        let mut numbers = [0u32; 3];
        for (n, field) in numbers.iter_mut().zip(triple) {
            *n = parse_u32(field).ok_or_else(|| {
                OptionsError::new(format_args!(
                    "invalid {name}= {}: {} is not a number from 0 to {}",
                    quote(value),
                    quote(field.as_bytes()),
                    u32::MAX
                ))
            })?;
        }
        let [container, host, size] = numbers;
        let range = format!("{container}:{host}:{size}");
        if size == 0 {
            return Err(OptionsError::new(format_args!(
                "invalid {name}= {}: range {range} has size 0",
                quote(value)
            )));
        }
        // As the kernel's uid_map: a range may not wrap or include id 4294967295 ((uid_t)-1).
        if container.checked_add(size).is_none() || host.checked_add(size).is_none() {
            return Err(OptionsError::new(format_args!(
                "invalid {name}= {}: range {range} goes past id {}",
                quote(value),
                u32::MAX - 1
            )));
        }
        ranges.push(IdRange {
            container,
            host,
            size,
        });
    }
    Ok(ranges)
}

/// `-o` options that take no value.
const NO_VALUE: &[&str] = &[
    "squash_to_root",
    "static_nlink",
    "noacl",
    "volatile",
    "ino32_t",
    "userxattr",
    "debug",
];

/// Parses one `-o` field (`name` or `name=value`).
fn parse_option(raw: &mut Raw, field: &[u8]) -> Result<()> {
    let (name_bytes, value) = match field.iter().position(|&c| c == b'=') {
        Some(i) => (&field[..i], Some(&field[i + 1..])),
        None => (field, None),
    };
    let whole = String::from_utf8_lossy(field).into_owned();
    let Ok(name) = std::str::from_utf8(name_bytes) else {
        raw.ignored_options.push(whole);
        return Ok(());
    };
    if value.is_some() && (NO_VALUE.contains(&name) || FUSE_FLAGS.contains(&name)) {
        return Err(OptionsError::new(format_args!(
            "option {name} takes no value (got {})",
            quote(field)
        )));
    }
    let need = || {
        value.ok_or_else(|| {
            OptionsError::new(format_args!("option {name} needs a value ({name}=...)"))
        })
    };
    let need_path = || -> Result<PathBuf> {
        let v = need()?;
        if v.is_empty() {
            return Err(OptionsError::new(format_args!("{name} is empty")));
        }
        Ok(path_of(unescape(v)))
    };
    match name {
        // Layers.
        "lowerdir" => raw.lowers = Some(split_lowerdir(need()?)?),
        "lowerdir+" => {
            let v = need()?;
            if v.is_empty() {
                return Err(OptionsError::new("lowerdir+ is empty"));
            }
            let lowers = raw.lowers.get_or_insert_with(Vec::new);
            lowers.push(path_of(v.to_vec()));
            check_layer_count(lowers.len())?;
        }
        "datadir+" => {
            return Err(OptionsError::new(format_args!(
                "option {} is not supported (data-only lower layers)",
                quote(field)
            )));
        }
        "upperdir" => raw.upper = Some(need_path()?),
        "workdir" => raw.work = Some(need_path()?),

        // ovlfs's own.
        "whiteout" => {
            let v = need()?;
            raw.whiteout = match v {
                b"chardev" => WhiteoutMode::Chardev,
                b"xattr" => WhiteoutMode::Xattr,
                b"auto" => WhiteoutMode::Auto,
                _ => return Err(bad_value(name, v, "chardev, xattr or auto")),
            };
        }
        "userxattr" => raw.userxattr = true,
        "passthrough" => {
            let v = need()?;
            raw.passthrough = match v {
                b"auto" => PassthroughMode::Auto,
                b"on" => PassthroughMode::On,
                b"off" => PassthroughMode::Off,
                _ => return Err(bad_value(name, v, "auto, on or off")),
            };
        }
        "threads" => {
            let v = need()?;
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(parse_u32)
                .filter(|&n| n >= 1 && n as usize <= MAX_THREADS)
                .ok_or_else(|| {
                    bad_value(name, v, &format!("an integer from 1 to {MAX_THREADS}"))
                })?;
            raw.threads = Some(n as usize);
        }

        // fuse-overlayfs's.
        "threaded" => raw.threaded = Some(parse_bool01(name, need()?)?),
        "fsync" => raw.fsync = Some(parse_bool01(name, need()?)?),
        "writeback" => raw.writeback = Some(parse_bool01(name, need()?)?),
        "volatile" => raw.volatile = true,
        "timeout" => raw.timeout = Some(parse_timeout(need()?)?),
        "squash_to_root" => raw.squash_to_root = true,
        "squash_to_uid" | "squash_to_gid" => {
            let v = need()?;
            let id = std::str::from_utf8(v)
                .ok()
                .and_then(parse_u32)
                .ok_or_else(|| bad_value(name, v, &format!("a number from 0 to {}", u32::MAX)))?;
            if name == "squash_to_uid" {
                raw.squash_to_uid = Some(id);
            } else {
                raw.squash_to_gid = Some(id);
            }
        }
        "uidmapping" => raw.uid_mapping = parse_mapping(name, need()?)?,
        "gidmapping" => raw.gid_mapping = parse_mapping(name, need()?)?,
        "static_nlink" => raw.static_nlink = true,
        "noacl" => raw.noacl = true,
        "ino32_t" => raw.ino32 = true,
        "debug" => raw.debug = true,
        "xino" => {
            let v = need()?;
            if !matches!(v, b"on" | b"off" | b"auto") {
                return Err(bad_value(name, v, "on, off or auto"));
            }
            raw.ignored_options.push(whole);
        }
        "xattr_permissions" | "context" | "plugins" => {
            need()?;
            raw.ignored_options.push(whole);
        }
        "fast_ino" | "noxattrs" | "redirect_dir" => raw.ignored_options.push(whole),

        // Generic FUSE / mount options.
        _ if FUSE_FLAGS.contains(&name) => raw.fuse_options.push(whole),
        _ if FUSE_VALUED.contains(&name) => {
            let v = need()?;
            if matches!(name, "max_read" | "blksize") {
                let ok = std::str::from_utf8(v)
                    .ok()
                    .and_then(parse_u32)
                    .is_some_and(|n| n > 0);
                if !ok {
                    return Err(bad_value(name, v, "a positive integer"));
                }
            } else if v.is_empty() {
                return Err(OptionsError::new(format_args!("{name} is empty")));
            }
            raw.fuse_options.push(whole);
        }
        _ if value.is_none() && FSTAB_ONLY.contains(&name) => {}
        _ if name.starts_with("x-") || name == "comment" => {}
        _ => raw.ignored_options.push(whole),
    }
    Ok(())
}

/// A directory named on the command line, resolved and checked.
struct Dir {
    /// Canonical absolute path.
    path: PathBuf,
    dev: u64,
    /// (st_dev, st_ino) of the directory and of each of its ancestors.
    chain: Vec<(u64, u64)>,
}

impl Dir {
    /// Resolves `given` (relative to the cwd, symlinks followed) and checks it is a directory.
    fn resolve(what: &str, given: &Path) -> Result<Dir> {
        let fail = |e: &io::Error| {
            OptionsError::new(format_args!(
                "{what} {}: {}",
                quote_path(given),
                errno_text(e)
            ))
        };
        let path = fs::canonicalize(given).map_err(|e| fail(&e))?;
        let meta = fs::metadata(&path).map_err(|e| fail(&e))?;
        if !meta.is_dir() {
            return Err(fail(&io::Error::from_raw_os_error(libc::ENOTDIR)));
        }
        let chain = path
            .ancestors()
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| (m.dev(), m.ino()))
            .collect();
        Ok(Dir {
            path,
            dev: meta.dev(),
            chain,
        })
    }

    fn id(&self) -> (u64, u64) {
        self.chain[0]
    }

    fn same_as(&self, other: &Dir) -> bool {
        self.id() == other.id()
    }

    /// This directory is `other` or below it.
    fn within(&self, other: &Dir) -> bool {
        self.chain.contains(&other.id())
    }

    fn shown(&self) -> String {
        quote_path(&self.path)
    }
}

/// Checks every path and the relations between the layers; builds the [`Config`].
fn validate(raw: Raw) -> Result<Config> {
    let mut positionals = raw.positionals.into_iter();
    let (source, mount_arg) = match (positionals.next(), positionals.next(), positionals.next()) {
        (None, _, _) => {
            return Err(OptionsError::new(
                "no mountpoint given (usage: ovlfs [-f] [-d] [-o OPTS]... MERGED)",
            ));
        }
        (Some(m), None, _) => (None, m),
        (Some(s), Some(m), None) => (Some(s.to_string_lossy().into_owned()), m),
        (Some(_), Some(_), Some(extra)) => {
            return Err(OptionsError::new(format_args!(
                "too many arguments: {} (expected at most SOURCE and MERGED)",
                quote(extra.as_bytes())
            )));
        }
    };

    let lowers = match raw.lowers {
        None => {
            return Err(OptionsError::new(
                "no lowerdir given (-o lowerdir=DIR[:DIR...])",
            ));
        }
        Some(l) if l.is_empty() => return Err(OptionsError::new("lowerdir is empty")),
        Some(l) => l,
    };
    match (&raw.upper, &raw.work) {
        (Some(_), None) => {
            return Err(OptionsError::new(
                "upperdir given without workdir (add -o workdir=DIR)",
            ));
        }
        (None, Some(_)) => {
            return Err(OptionsError::new(
                "workdir given without upperdir (add -o upperdir=DIR)",
            ));
        }
        _ => {}
    }

    let lowers = lowers
        .iter()
        .map(|l| Dir::resolve("lowerdir", l))
        .collect::<Result<Vec<Dir>>>()?;
    let upper = raw
        .upper
        .as_deref()
        .map(|u| Dir::resolve("upperdir", u))
        .transpose()?;
    let work = raw
        .work
        .as_deref()
        .map(|w| Dir::resolve("workdir", w))
        .transpose()?;
    let mountpoint = Dir::resolve("mountpoint", Path::new(&mount_arg))?;

    if let (Some(upper), Some(work)) = (&upper, &work) {
        if upper.same_as(work) {
            return Err(OptionsError::new(format_args!(
                "upperdir and workdir are the same directory {}",
                upper.shown()
            )));
        }
        if work.within(upper) {
            return Err(OptionsError::new(format_args!(
                "workdir {} is inside upperdir {}",
                work.shown(),
                upper.shown()
            )));
        }
        if upper.within(work) {
            return Err(OptionsError::new(format_args!(
                "upperdir {} is inside workdir {}",
                upper.shown(),
                work.shown()
            )));
        }
        if upper.dev != work.dev {
            return Err(OptionsError::new(format_args!(
                "workdir {} is not on the same filesystem as upperdir {}",
                work.shown(),
                upper.shown()
            )));
        }
    }
    for (what, dir) in [("upperdir", &upper), ("workdir", &work)] {
        let Some(dir) = dir else { continue };
        for lower in &lowers {
            if dir.same_as(lower) {
                return Err(OptionsError::new(format_args!(
                    "{what} {} is also a lowerdir",
                    dir.shown()
                )));
            }
            if dir.within(lower) {
                return Err(OptionsError::new(format_args!(
                    "{what} {} is inside lowerdir {}",
                    dir.shown(),
                    lower.shown()
                )));
            }
            if lower.within(dir) {
                return Err(OptionsError::new(format_args!(
                    "lowerdir {} is inside {what} {}",
                    lower.shown(),
                    dir.shown()
                )));
            }
        }
        // The daemon would have to look itself up through its own mount.
        if mountpoint.within(dir) && !mountpoint.same_as(dir) {
            return Err(OptionsError::new(format_args!(
                "mountpoint {} is inside {what} {}",
                mountpoint.shown(),
                dir.shown()
            )));
        }
    }

    let mut threads = raw.threads;
    if threads.is_none() && (raw.single_threaded || raw.threaded == Some(false)) {
        threads = Some(1);
    }
    Ok(Config {
        lowerdirs: lowers.into_iter().map(|d| d.path).collect(),
        upperdir: upper.map(|d| d.path),
        workdir: work.map(|d| d.path),
        mountpoint: mountpoint.path,
        source,
        foreground: raw.foreground || raw.debug,
        debug: raw.debug,
        whiteout: raw.whiteout,
        userxattr: raw.userxattr,
        passthrough: raw.passthrough,
        threads,
        timeout: raw.timeout,
        fsync: raw.fsync.unwrap_or(true) && !raw.volatile,
        volatile: raw.volatile,
        writeback: raw.writeback.unwrap_or(true),
        uid_mapping: raw.uid_mapping,
        gid_mapping: raw.gid_mapping,
        squash_to_root: raw.squash_to_root,
        squash_to_uid: raw.squash_to_uid,
        squash_to_gid: raw.squash_to_gid,
        static_nlink: raw.static_nlink,
        noacl: raw.noacl,
        ino32: raw.ino32,
        fuse_options: raw.fuse_options,
        ignored_options: raw.ignored_options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use tempfile::TempDir;

    /// A temp tree with helpers that create directories and files and return their paths.
    struct Tree(TempDir);

    impl Tree {
        fn new() -> Tree {
            Tree(tempfile::tempdir().unwrap())
        }

        fn path(&self, name: &str) -> String {
            self.0.path().join(name).to_str().unwrap().to_owned()
        }

        fn dir(&self, name: &str) -> String {
            let p = self.path(name);
            fs::create_dir_all(&p).unwrap();
            p
        }

        fn file(&self, name: &str) -> String {
            let p = self.path(name);
            fs::write(&p, b"x").unwrap();
            p
        }

        /// lower `l`, upper `u`, work `w`, mountpoint `m`, all created.
        fn standard(&self) -> (String, String, String, String) {
            (self.dir("l"), self.dir("u"), self.dir("w"), self.dir("m"))
        }
    }

    fn os(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn parse(list: &[&str]) -> Result<Action> {
        parse_args(os(list))
    }

    #[track_caller]
    fn config(list: &[&str]) -> Config {
        match parse(list) {
            Ok(Action::Mount(c)) => *c,
            other => panic!("{list:?}: expected a mount config, got {other:?}"),
        }
    }

    /// The error message, checked to be one line starting with `ovlfs: `.
    #[track_caller]
    fn err(list: &[&str]) -> String {
        match parse(list) {
            Err(e) => {
                let m = e.to_string();
                assert!(m.starts_with("ovlfs: "), "{m}");
                assert!(!m.contains('\n'), "{m:?}");
                assert_eq!(m, e.message());
                m
            }
            Ok(a) => panic!("{list:?}: expected an error, got {a:?}"),
        }
    }

    #[track_caller]
    fn err_contains(list: &[&str], needles: &[&str]) -> String {
        let m = err(list);
        for n in needles {
            assert!(m.contains(n), "{m:?} does not mention {n:?}");
        }
        m
    }

    /// `-o lowerdir=L,upperdir=U,workdir=W,EXTRA M` on a standard tree.
    fn with_extra(t: &Tree, extra: &str) -> Result<Action> {
        let (l, u, w, m) = t.standard();
        let opts = format!("lowerdir={l},upperdir={u},workdir={w},{extra}");
        parse(&["-o", &opts, &m])
    }

    #[track_caller]
    fn cfg_extra(extra: &str) -> Config {
        let t = Tree::new();
        match with_extra(&t, extra) {
            Ok(Action::Mount(c)) => *c,
            other => panic!("{extra}: {other:?}"),
        }
    }

    #[track_caller]
    fn err_extra(extra: &str, needles: &[&str]) -> String {
        let t = Tree::new();
        match with_extra(&t, extra) {
            Err(e) => {
                let m = e.to_string();
                assert!(!m.contains('\n'), "{m:?}");
                for n in needles {
                    assert!(m.contains(n), "{m:?} does not mention {n:?}");
                }
                m
            }
            Ok(a) => panic!("{extra}: expected an error, got {a:?}"),
        }
    }

    // ---- splitting ----

    #[test]
    fn split_plain_and_empty_fields() {
        assert_eq!(split_option_list(b"a,b=c,d"), vec![&b"a"[..], b"b=c", b"d"]);
        assert_eq!(split_option_list(b",,volatile,"), vec![&b"volatile"[..]]);
        assert_eq!(split_option_list(b"x,work,"), vec![&b"x"[..], b"work"]);
        assert!(split_option_list(b"").is_empty());
        assert!(split_option_list(b",,,").is_empty());
    }

    #[test]
    fn split_quotes_and_escapes() {
        assert_eq!(
            split_option_list(br#"a,context="x,y,z",b"#),
            vec![&b"a"[..], br#"context="x,y,z""#, b"b"]
        );
        assert_eq!(
            split_option_list(br"lowerdir=/a\,b,c"),
            vec![&br"lowerdir=/a\,b"[..], b"c"]
        );
        // An unterminated quote swallows the rest rather than failing.
        assert_eq!(split_option_list(br#"a,"b,c"#), vec![&b"a"[..], br#""b,c"#]);
    }

    #[test]
    fn unescape_removes_backslashes() {
        assert_eq!(unescape(br"/a\:b\,c\\d"), br"/a:b,c\d".to_vec());
        assert_eq!(unescape(br"/a\"), br"/a\".to_vec());
        assert_eq!(unescape(b"/plain"), b"/plain".to_vec());
    }

    #[test]
    fn split_lowerdir_escapes_and_order() {
        let v = split_lowerdir(br"/top:/mid\:dle:/bottom").unwrap();
        assert_eq!(
            v,
            vec![
                PathBuf::from("/top"),
                PathBuf::from("/mid:dle"),
                PathBuf::from("/bottom")
            ]
        );
    }

    #[test]
    fn split_lowerdir_empty_elements() {
        for bad in [&b"a::b"[..], b":a", b"a:", b":", b"a:b::c"] {
            let e = split_lowerdir(bad).unwrap_err().to_string();
            assert!(e.contains("empty element"), "{e}");
            assert!(e.contains("lowerdir"), "{e}");
        }
        assert!(
            split_lowerdir(b"")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }

    #[test]
    fn split_lowerdir_limit() {
        let list = |n: usize| vec!["/x"; n].join(":");
        assert_eq!(split_lowerdir(list(500).as_bytes()).unwrap().len(), 500);
        let e = split_lowerdir(list(501).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("501") && e.contains("500"), "{e}");
    }

    // ---- value parsers ----

    #[test]
    fn mapping_valid() {
        let r = parse_mapping("uidmapping", b"0:1000:1:1:100000:65536").unwrap();
        assert_eq!(
            r,
            vec![
                IdRange {
                    container: 0,
                    host: 1000,
                    size: 1
                },
                IdRange {
                    container: 1,
                    host: 100000,
                    size: 65536
                },
            ]
        );
        assert_eq!(parse_mapping("uidmapping", b":0:1000:1").unwrap().len(), 1);
        assert!(parse_mapping("uidmapping", b"").unwrap().is_empty());
        assert!(parse_mapping("uidmapping", b":").unwrap().is_empty());
        // Boundaries: the last mappable id is u32::MAX - 1, as for the kernel's uid_map.
        assert!(parse_mapping("uidmapping", b"0:0:4294967295").is_ok());
        assert!(parse_mapping("uidmapping", b"4294967294:4294967294:1").is_ok());
    }

    #[test]
    fn mapping_invalid() {
        let cases: &[(&[u8], &str)] = &[
            (b"0:1000", "triples"),
            (b"0:1000:1:2", "triples"),
            (b"0:1000:1:", "triples"),
            (b"::0:1000:1", "triples"),
            (b"a:1000:1", "\"a\""),
            (b"0:-1:1", "\"-1\""),
            (b"0:+1:1", "\"+1\""),
            (b"0: 1:1", "\" 1\""),
            (b"0:4294967296:1", "4294967296"),
            (b"0:1000:0", "size 0"),
            (b"4294967295:0:2", "goes past"),
            (b"0:4294967295:2", "goes past"),
            (b"1:0:4294967295", "goes past"),
            (b"4294967295:0:1", "goes past"),
            (b"0:4294967295:1", "goes past"),
        ];
        for (value, needle) in cases {
            let e = parse_mapping("gidmapping", value).unwrap_err().to_string();
            assert!(e.contains("gidmapping"), "{e}");
            assert!(e.contains(needle), "{e} lacks {needle}");
        }
    }

    #[test]
    fn timeout_values() {
        assert_eq!(parse_timeout(b"1").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_timeout(b"0").unwrap(), Duration::ZERO);
        assert_eq!(parse_timeout(b"0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_timeout(b"2.").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_timeout(b".25").unwrap(), Duration::from_millis(250));
        for bad in [
            &b"-1"[..],
            b"",
            b"abc",
            b"inf",
            b"nan",
            b"1e3",
            b"1.2.3",
            b".",
            b"+1",
        ] {
            let e = parse_timeout(bad).unwrap_err().to_string();
            assert!(e.contains("timeout"), "{e}");
        }
    }

    #[test]
    fn u32_strict() {
        assert_eq!(parse_u32("0"), Some(0));
        assert_eq!(parse_u32("4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32("4294967296"), None);
        assert_eq!(parse_u32("+1"), None);
        assert_eq!(parse_u32(""), None);
        assert_eq!(parse_u32("1 "), None);
    }

    // ---- flags and positionals ----

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

    #[test]
    fn minimal_read_only_mount() {
        let t = Tree::new();
        let (l, m) = (t.dir("l"), t.dir("m"));
        let c = config(&["-o", &format!("lowerdir={l}"), &m]);
        assert_eq!(c.lowerdirs, vec![PathBuf::from(&l)]);
        assert_eq!(c.upperdir, None);
        assert_eq!(c.workdir, None);
        assert_eq!(c.mountpoint, PathBuf::from(&m));
        assert_eq!(c.source, None);
        assert!(!c.foreground && !c.debug);
    }

    #[test]
    fn defaults() {
        let c = cfg_extra("");
        assert_eq!(c.whiteout, WhiteoutMode::Chardev);
        assert_eq!(c.passthrough, PassthroughMode::Auto);
        assert!(c.fsync && c.writeback && !c.volatile);
        assert_eq!(c.threads, None);
        assert_eq!(c.timeout, None);
        assert!(!c.userxattr && !c.squash_to_root && !c.static_nlink && !c.noacl && !c.ino32);
        assert_eq!(c.squash_to_uid, None);
        assert_eq!(c.squash_to_gid, None);
        assert!(c.uid_mapping.is_empty() && c.gid_mapping.is_empty());
        assert!(c.fuse_options.is_empty() && c.ignored_options.is_empty());
    }

    #[test]
    fn full_mount_paths_are_canonical() {
        let t = Tree::new();
        let (l, u, w, m) = t.standard();
        let l2 = t.dir("l2");
        let opts = format!(
            "lowerdir={l}:{}/../l2,upperdir={u}/.,workdir={w}//",
            t.path("l")
        );
        let c = config(&["-o", &opts, &m]);
        assert_eq!(c.lowerdirs, vec![PathBuf::from(&l), PathBuf::from(&l2)]);
        assert_eq!(c.upperdir, Some(PathBuf::from(&u)));
        assert_eq!(c.workdir, Some(PathBuf::from(&w)));
    }

    #[test]
    fn symlinked_layers_resolve() {
        let t = Tree::new();
        let (l, u, w, m) = t.standard();
        std::os::unix::fs::symlink(&l, t.path("link")).unwrap();
        std::os::unix::fs::symlink("../l", t.dir("sub").to_owned() + "/rel").unwrap();
        let opts = format!(
            "lowerdir={}:{},upperdir={u},workdir={w}",
            t.path("link"),
            t.path("sub/rel")
        );
        let c = config(&["-o", &opts, &m]);
        assert_eq!(c.lowerdirs, vec![PathBuf::from(&l), PathBuf::from(&l)]);
    }

    #[test]
    fn relative_paths_are_relative_to_cwd() {
        // cargo runs unit tests from the package root, which has src/.
        let c = config(&["-o", "lowerdir=src", "."]);
        let cwd = std::env::current_dir().unwrap().canonicalize().unwrap();
        assert_eq!(c.lowerdirs, vec![cwd.join("src")]);
        assert_eq!(c.mountpoint, cwd);
    }

    #[test]
    fn escaped_colon_and_comma_in_paths() {
        let t = Tree::new();
        let (l, u, w, m) = t.standard();
        let odd = t.dir("a:b,c");
        let opts = format!(
            r"lowerdir={}\:b\,c:{l},upperdir={u},workdir={w}",
            t.path("a")
        );
        let c = config(&["-o", &opts, &m]);
        assert_eq!(c.lowerdirs, vec![PathBuf::from(&odd), PathBuf::from(&l)]);
    }

    #[test]
    fn non_utf8_paths() {
        let t = Tree::new();
        let (u, w, m) = (t.dir("u"), t.dir("w"), t.dir("m"));
        let mut raw = t.0.path().as_os_str().as_bytes().to_vec();
        raw.extend_from_slice(b"/l\xff");
        fs::create_dir(OsStr::from_bytes(&raw)).unwrap();
        let mut opt = b"lowerdir=".to_vec();
        opt.extend_from_slice(&raw);
        opt.extend_from_slice(format!(",upperdir={u},workdir={w}").as_bytes());
        let args = vec![
            OsString::from("-o"),
            OsString::from_vec(opt),
            OsString::from(m),
        ];
        match parse_args(args).unwrap() {
            Action::Mount(c) => assert_eq!(c.lowerdirs[0].as_os_str().as_bytes(), &raw[..]),
            a => panic!("{a:?}"),
        }
    }

    #[test]
    fn joined_and_repeated_o_accumulate() {
        let t = Tree::new();
        let (l, u, w, m) = t.standard();
        let c = config(&[
            &format!("-olowerdir={l}"),
            "-o",
            &format!("upperdir={u}"),
            &format!("-oworkdir={w},noacl"),
            "-o",
            "allow_other",
            &m,
        ]);
        assert_eq!(c.upperdir, Some(PathBuf::from(&u)));
        assert_eq!(c.workdir, Some(PathBuf::from(&w)));
        assert!(c.noacl);
        assert_eq!(c.fuse_options, vec!["allow_other".to_owned()]);
    }

    #[test]
    fn later_values_win() {
        let t = Tree::new();
        let (l, u, w, m) = t.standard();
        let l2 = t.dir("l2");
        let c = config(&[
            "-o",
            &format!("lowerdir=/nonexistent,lowerdir={l2},upperdir={u},workdir={w}"),
            "-o",
            &format!("lowerdir={l},whiteout=xattr,whiteout=auto"),
            &m,
        ]);
        assert_eq!(c.lowerdirs, vec![PathBuf::from(&l)]);
        assert_eq!(c.whiteout, WhiteoutMode::Auto);
    }

    #[test]
    fn lowerdir_plus_appends() {
        let t = Tree::new();
        let (l, m) = (t.dir("l"), t.dir("m"));
        let l2 = t.dir("x:y");
        let c = config(&["-o", &format!("lowerdir+={l},lowerdir+={l2}"), &m]);
        assert_eq!(c.lowerdirs, vec![PathBuf::from(&l), PathBuf::from(&l2)]);
        err_contains(&["-o", "lowerdir+=", &m], &["lowerdir+"]);
        err_contains(
            &["-o", &format!("lowerdir={l},datadir+={l2}"), &m],
            &["datadir+"],
        );
    }

    #[test]
    fn mount_helper_form() {
        let t = Tree::new();
        let (l, u, w, m) = t.standard();
        let opts = format!("rw,lowerdir={l},upperdir={u},workdir={w}");
        let c = config(&["overlay-src", &m, "-o", &opts]);
        assert_eq!(c.source.as_deref(), Some("overlay-src"));
        assert_eq!(c.mountpoint, PathBuf::from(&m));
        assert_eq!(c.fuse_options, vec!["rw".to_owned()]);
        err_contains(
            &["a", &m, "c", "-o", &opts],
            &["too many arguments", "\"c\""],
        );
    }

    #[test]
    fn containers_storage_argv() {
        // What containers/storage passes: relative-ish layer links, trailing and double commas.
        let t = Tree::new();
        let (l, u, w, m) = t.standard();
        let l2 = t.dir("l2");
        std::os::unix::fs::symlink(&l2, t.path("short")).unwrap();
        let opts = format!(
            ",,lowerdir={l}:{},upperdir={u},workdir={w},,uidmapping=:0:1000:1:1:100000:65536,\
             gidmapping=:0:1000:1,volatile,context=\"system_u:object_r:container_file_t:s0:c1,c2\",\
             nodev,",
            t.path("short")
        );
        let c = config(&["-o", &opts, &m]);
        assert_eq!(c.lowerdirs, vec![PathBuf::from(&l), PathBuf::from(&l2)]);
        assert_eq!(c.uid_mapping.len(), 2);
        assert_eq!(
            c.gid_mapping,
            vec![IdRange {
                container: 0,
                host: 1000,
                size: 1
            }]
        );
        assert!(c.volatile && !c.fsync);
        assert_eq!(c.fuse_options, vec!["nodev".to_owned()]);
        assert_eq!(
            c.ignored_options,
            vec!["context=\"system_u:object_r:container_file_t:s0:c1,c2\"".to_owned()]
        );
    }

    #[test]
    fn flags() {
        let t = Tree::new();
        let (l, m) = (t.dir("l"), t.dir("m"));
        let o = format!("lowerdir={l}");
        let c = config(&["-f", "-o", &o, &m]);
        assert!(c.foreground && !c.debug);
        let c = config(&["-d", "-o", &o, &m]);
        assert!(c.foreground && c.debug);
        let c = config(&["-o", &format!("{o},debug"), &m]);
        assert!(c.foreground && c.debug);
        let c = config(&["-fd", "-o", &o, &m]);
        assert!(c.foreground && c.debug);
        let c = config(&["-s", "-o", &o, &m]);
        assert_eq!(c.threads, Some(1));
        let c = config(&["-o", &o, "--", &m]);
        assert_eq!(c.mountpoint, PathBuf::from(&m));
    }

    #[test]
    fn flag_errors() {
        let t = Tree::new();
        let (l, m) = (t.dir("l"), t.dir("m"));
        let o = format!("lowerdir={l}");
        err_contains(&["-x", "-o", &o, &m], &["unknown flag", "\"-x\""]);
        err_contains(&["--frobnicate", "-o", &o, &m], &["\"--frobnicate\""]);
        err_contains(&["-fx", "-o", &o, &m], &["\"-fx\""]);
        err_contains(&[&m, "-o"], &["-o", "argument"]);
        err_contains(&["-o", &o], &["mountpoint"]);
        err_contains(&[], &["mountpoint"]);
        // After `--` a dash argument is a (missing) path.
        err_contains(&["-o", &o, "--", "-x"], &["mountpoint", "\"-x\""]);
    }

    // ---- option values ----

    #[test]
    fn ovlfs_options() {
        assert_eq!(
            cfg_extra("whiteout=chardev").whiteout,
            WhiteoutMode::Chardev
        );
        assert_eq!(cfg_extra("whiteout=xattr").whiteout, WhiteoutMode::Xattr);
        assert_eq!(cfg_extra("whiteout=auto").whiteout, WhiteoutMode::Auto);
        assert_eq!(cfg_extra("passthrough=on").passthrough, PassthroughMode::On);
        assert_eq!(
            cfg_extra("passthrough=off").passthrough,
            PassthroughMode::Off
        );
        assert_eq!(
            cfg_extra("passthrough=auto").passthrough,
            PassthroughMode::Auto
        );
        assert!(cfg_extra("userxattr").userxattr);
        assert_eq!(cfg_extra("threads=8").threads, Some(8));
        assert_eq!(cfg_extra("threads=1024").threads, Some(1024));
    }

    #[test]
    fn ovlfs_option_errors() {
        err_extra("whiteout=foo", &["whiteout", "\"foo\"", "chardev"]);
        err_extra("whiteout=", &["whiteout"]);
        err_extra("whiteout", &["whiteout", "needs a value"]);
        err_extra("passthrough=maybe", &["passthrough", "\"maybe\""]);
        for bad in ["0", "-1", "abc", "1025", "1.5", ""] {
            err_extra(
                &format!("threads={bad}"),
                &["threads", &format!("\"{bad}\"")],
            );
        }
        err_extra("userxattr=1", &["userxattr", "takes no value"]);
    }

    #[test]
    fn fuse_overlayfs_options() {
        let c = cfg_extra(
            "squash_to_root,squash_to_uid=0,squash_to_gid=4294967295,static_nlink,noacl,\
             timeout=2.5,fsync=0,writeback=0,ino32_t",
        );
        assert!(c.squash_to_root && c.static_nlink && c.noacl && c.ino32);
        assert_eq!(c.squash_to_uid, Some(0));
        assert_eq!(c.squash_to_gid, Some(u32::MAX));
        assert_eq!(c.timeout, Some(Duration::from_millis(2500)));
        assert!(!c.fsync && !c.writeback && !c.volatile);
        assert_eq!(cfg_extra("threaded=0").threads, Some(1));
        assert_eq!(cfg_extra("threaded=1").threads, None);
        assert_eq!(cfg_extra("threaded=0,threads=4").threads, Some(4));
        assert_eq!(cfg_extra("threads=4,threaded=0").threads, Some(4));
        let c = cfg_extra("volatile,fsync=1");
        assert!(c.volatile && !c.fsync);
        assert!(cfg_extra("fsync=1,writeback=1").fsync);
    }

    #[test]
    fn ignored_compat_options() {
        let c = cfg_extra(
            "xattr_permissions=2,xino=auto,fast_ino,fast_ino=1,plugins=/a.so:/b.so,\
             noxattrs=1,redirect_dir=off,index=off,mystery,other=1",
        );
        assert_eq!(
            c.ignored_options,
            [
                "xattr_permissions=2",
                "xino=auto",
                "fast_ino",
                "fast_ino=1",
                "plugins=/a.so:/b.so",
                "noxattrs=1",
                "redirect_dir=off",
                "index=off",
                "mystery",
                "other=1"
            ]
        );
        assert!(c.fuse_options.is_empty());
        let c =
            cfg_extra("defaults,noauto,nofail,_netdev,user,users,x-systemd.automount,comment=x");
        assert!(c.ignored_options.is_empty() && c.fuse_options.is_empty());
        for ok in ["on", "off", "auto"] {
            assert_eq!(cfg_extra(&format!("xino={ok}")).ignored_options.len(), 1);
        }
    }

    #[test]
    fn fuse_overlayfs_option_errors() {
        for name in ["threaded", "fsync", "writeback"] {
            for bad in ["2", "yes", "", "-1"] {
                err_extra(
                    &format!("{name}={bad}"),
                    &[name, &format!("\"{bad}\""), "0 or 1"],
                );
            }
            err_extra(name, &[name, "needs a value"]);
        }
        for bad in ["-1", "x", "", "nan"] {
            err_extra(
                &format!("timeout={bad}"),
                &["timeout", &format!("\"{bad}\"")],
            );
        }
        for name in ["squash_to_uid", "squash_to_gid"] {
            for bad in ["-1", "4294967296", "root", ""] {
                err_extra(&format!("{name}={bad}"), &[name, &format!("\"{bad}\"")]);
            }
        }
        err_extra("xino=maybe", &["xino", "\"maybe\""]);
        err_extra("uidmapping=0:1000", &["uidmapping", "triples"]);
        err_extra("gidmapping=0:x:1", &["gidmapping", "\"x\""]);
        err_extra("uidmapping=0:0:0", &["uidmapping", "size 0"]);
        err_extra("squash_to_root=1", &["squash_to_root", "takes no value"]);
        err_extra("volatile=1", &["volatile", "takes no value"]);
        err_extra("context", &["context", "needs a value"]);
    }

    #[test]
    fn fuse_options_pass_through() {
        let all = FUSE_FLAGS.join(",") + ",fsname=myfs,subtype=ovl,max_read=131072,blksize=4096";
        let c = cfg_extra(&all);
        let mut expected: Vec<String> = FUSE_FLAGS.iter().map(|s| s.to_string()).collect();
        expected.extend(
            [
                "fsname=myfs",
                "subtype=ovl",
                "max_read=131072",
                "blksize=4096",
            ]
            .map(String::from),
        );
        assert_eq!(c.fuse_options, expected);
        assert!(c.ignored_options.is_empty());
        // `ro` with an upper is kept: the mount is read-only, the layers are still validated.
        let c = cfg_extra("ro");
        assert_eq!(c.fuse_options, vec!["ro".to_owned()]);
        assert!(c.upperdir.is_some());
    }

    #[test]
    fn fuse_option_errors() {
        err_extra("allow_other=1", &["allow_other", "takes no value"]);
        err_extra("max_read=abc", &["max_read", "\"abc\""]);
        err_extra("max_read=0", &["max_read"]);
        err_extra("blksize=-4", &["blksize"]);
        err_extra("fsname", &["fsname", "needs a value"]);
        err_extra("fsname=", &["fsname", "empty"]);
    }

    // ---- layer validation ----

    #[test]
    fn missing_lowerdir() {
        let t = Tree::new();
        let (_, u, w, m) = t.standard();
        err_contains(
            &["-o", &format!("upperdir={u},workdir={w}"), &m],
            &["no lowerdir"],
        );
        err_contains(&[&m], &["no lowerdir"]);
        err_contains(&["-o", "lowerdir=", &m], &["lowerdir is empty"]);
        err_contains(
            &["-o", "lowerdir=/a::/b", &m],
            &["empty element", "\"/a::/b\""],
        );
    }

    #[test]
    fn layer_paths_must_be_directories() {
        let t = Tree::new();
        let (l, u, w, m) = t.standard();
        let f = t.file("f");
        let gone = t.path("gone");
        let sub_of_file = format!("{f}/x");
        let run = |l: &str, u: &str, w: &str, m: &str| {
            err(&["-o", &format!("lowerdir={l},upperdir={u},workdir={w}"), m])
        };
        let nf = "No such file or directory";
        let nd = "Not a directory";
        let m1 = run(&format!("{l}:{gone}"), &u, &w, &m);
        assert_eq!(m1, format!("ovlfs: lowerdir \"{gone}\": {nf}"));
        let m1 = run(&f, &u, &w, &m);
        assert_eq!(m1, format!("ovlfs: lowerdir \"{f}\": {nd}"));
        assert!(run(&sub_of_file, &u, &w, &m).contains(nd));
        assert_eq!(
            run(&l, &gone, &w, &m),
            format!("ovlfs: upperdir \"{gone}\": {nf}")
        );
        assert_eq!(
            run(&l, &f, &w, &m),
            format!("ovlfs: upperdir \"{f}\": {nd}")
        );
        assert_eq!(
            run(&l, &u, &gone, &m),
            format!("ovlfs: workdir \"{gone}\": {nf}")
        );
        assert_eq!(run(&l, &u, &f, &m), format!("ovlfs: workdir \"{f}\": {nd}"));
        assert_eq!(
            run(&l, &u, &w, &gone),
            format!("ovlfs: mountpoint \"{gone}\": {nf}")
        );
        assert_eq!(
            run(&l, &u, &w, &f),
            format!("ovlfs: mountpoint \"{f}\": {nd}")
        );
        // A dangling symlink as a lower.
        std::os::unix::fs::symlink(&gone, t.path("dangling")).unwrap();
        assert!(run(&t.path("dangling"), &u, &w, &m).contains(nf));
    }

    #[test]
    fn upper_and_work_go_together() {
        let t = Tree::new();
        let (l, u, w, m) = t.standard();
        err_contains(
            &["-o", &format!("lowerdir={l},upperdir={u}"), &m],
            &["upperdir given without workdir"],
        );
        err_contains(
            &["-o", &format!("lowerdir={l},workdir={w}"), &m],
            &["workdir given without upperdir"],
        );
        err_contains(
            &["-o", &format!("lowerdir={l},upperdir=,workdir={w}"), &m],
            &["upperdir is empty"],
        );
    }

    #[track_caller]
    fn layout_err(l: &str, u: &str, w: &str, m: &str, needles: &[&str]) {
        err_contains(
            &["-o", &format!("lowerdir={l},upperdir={u},workdir={w}"), m],
            needles,
        );
    }

    #[test]
    fn upper_work_overlap() {
        let t = Tree::new();
        let (l, u, _, m) = t.standard();
        layout_err(&l, &u, &u, &m, &["same directory", &u]);
        layout_err(
            &l,
            &u,
            &t.dir("u/work"),
            &m,
            &["workdir", "inside upperdir"],
        );
        let w = t.dir("w");
        layout_err(
            &l,
            &t.dir("w/upper"),
            &w,
            &m,
            &["upperdir", "inside workdir"],
        );
        // The same directory through a symlink is still the same directory.
        std::os::unix::fs::symlink(&u, t.path("ulink")).unwrap();
        layout_err(&l, &u, &t.path("ulink"), &m, &["same directory"]);
    }

    #[test]
    fn upper_lower_overlap() {
        let t = Tree::new();
        let (l, u, w, m) = t.standard();
        layout_err(&l, &l, &w, &m, &["upperdir", "also a lowerdir"]);
        layout_err(&l, &t.dir("l/up"), &w, &m, &["upperdir", "inside lowerdir"]);
        layout_err(
            &t.dir("u/low"),
            &u,
            &w,
            &m,
            &["lowerdir", "inside upperdir"],
        );
        layout_err(
            &format!("{l}:{}", t.dir("u/low2")),
            &u,
            &w,
            &m,
            &["inside upperdir"],
        );
        layout_err(&l, &u, &t.dir("l/wk"), &m, &["workdir", "inside lowerdir"]);
        layout_err(&t.dir("w/low"), &u, &w, &m, &["lowerdir", "inside workdir"]);
        layout_err(&w, &u, &w, &m, &["workdir", "also a lowerdir"]);
    }

    #[test]
    fn lowers_may_repeat_and_nest() {
        let t = Tree::new();
        let (l, u, w, m) = t.standard();
        let inner = t.dir("l/inner");
        let c = config(&[
            "-o",
            &format!("lowerdir={l}:{l}:{inner},upperdir={u},workdir={w}"),
            &m,
        ]);
        assert_eq!(c.lowerdirs.len(), 3);
    }

    #[test]
    fn mountpoint_placement() {
        let t = Tree::new();
        let (l, u, w, _) = t.standard();
        layout_err(
            &l,
            &u,
            &w,
            &t.dir("u/mnt"),
            &["mountpoint", "inside upperdir"],
        );
        layout_err(
            &l,
            &u,
            &w,
            &t.dir("w/mnt"),
            &["mountpoint", "inside workdir"],
        );
        // On a layer itself, or inside a lower, is allowed (like mounting over /usr).
        config(&["-o", &format!("lowerdir={l},upperdir={u},workdir={w}"), &u]);
        config(&["-o", &format!("lowerdir={l},upperdir={u},workdir={w}"), &l]);
        config(&[
            "-o",
            &format!("lowerdir={l},upperdir={u},workdir={w}"),
            &t.dir("l/mnt"),
        ]);
    }

    #[test]
    fn workdir_on_another_filesystem() {
        let shm = Path::new("/dev/shm");
        let t = Tree::new();
        let Ok(other) = tempfile::tempdir_in(shm) else {
            eprintln!("no /dev/shm: skipped");
            return;
        };
        let dev = |p: &Path| fs::metadata(p).unwrap().dev();
        if dev(other.path()) == dev(t.0.path()) {
            eprintln!("/dev/shm is on the same filesystem as the temp dir: skipped");
            return;
        }
        let (l, u, _, m) = t.standard();
        let w = other.path().to_str().unwrap();
        layout_err(
            &l,
            &u,
            w,
            &m,
            &["workdir", "not on the same filesystem", w, &u],
        );
    }

    #[test]
    fn too_many_lowers() {
        let t = Tree::new();
        let m = t.dir("m");
        let dirs: Vec<String> = (0..501).map(|i| t.dir(&format!("l{i}"))).collect();
        let c = config(&["-o", &format!("lowerdir={}", dirs[..500].join(":")), &m]);
        assert_eq!(c.lowerdirs.len(), 500);
        err_contains(
            &["-o", &format!("lowerdir={}", dirs.join(":")), &m],
            &["501", "500"],
        );
        let plus: Vec<String> = dirs.iter().map(|d| format!("lowerdir+={d}")).collect();
        err_contains(&["-o", &plus.join(","), &m], &["501"]);
    }

    #[test]
    fn messages_stay_on_one_line() {
        let t = Tree::new();
        let (l, m) = (t.dir("l"), t.dir("m"));
        let weird = t.path("new\nline");
        let msg = err(&["-o", &format!("lowerdir={l}:{weird}"), &m]);
        assert!(msg.contains(r"new\nline"), "{msg}");
        err(&["-o", "whiteout=a\nb", &m]);
        err(&["-\n"]);
    }

    #[test]
    fn nothing_is_created() {
        let t = Tree::new();
        let (l, u, w, m) = t.standard();
        let snapshot = || {
            let mut v: Vec<_> = walk(t.0.path());
            v.sort();
            v
        };
        let before = snapshot();
        config(&["-o", &format!("lowerdir={l},upperdir={u},workdir={w}"), &m]);
        err(&[
            "-o",
            &format!("lowerdir={l},upperdir={u},workdir={}", t.path("nowork")),
            &m,
        ]);
        err(&[
            "-o",
            &format!("lowerdir={l},upperdir={},workdir={w}", t.path("noup")),
            &m,
        ]);
        err(&[
            "-o",
            &format!("lowerdir={l},upperdir={u},workdir={w}"),
            &t.path("nomnt"),
        ]);
        assert_eq!(before, snapshot());
    }

    fn walk(dir: &Path) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            out.push((e.path(), meta.mtime_nsec() as u64 ^ meta.size()));
            if meta.is_dir() {
                out.extend(walk(&e.path()));
            }
        }
        out
    }

    #[test]
    fn error_type() {
        let e = OptionsError::new("x");
        assert_eq!(e.to_string(), "ovlfs: x");
        let _: &dyn std::error::Error = &e;
        let io = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(errno_text(&io), "No such file or directory");
    }
}
