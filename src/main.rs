//! The `ovlfs` command: parse the fuse-overlayfs compatible command line and mount. Started
//! as `mount.fuse.ovlfs` (by mount(8)), it reads mount(8)'s helper flags instead.

use ovlfs::options::{self, Action};

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("{message}");
    std::process::exit(1);
}

fn main() {
    let mut argv = std::env::args_os();
    let argv0 = argv.next().unwrap_or_default();
    let (args, fake) = if options::invoked_as_mount_helper(&argv0) {
        match options::mount_helper_args(argv) {
            Ok(h) => (h.args, h.fake),
            Err(e) => fail(e),
        }
    } else {
        (argv.collect(), false)
    };
    let action = match options::parse_args(args) {
        Ok(a) => a,
        Err(e) => fail(e),
    };
    let config = match action {
        Action::Help => {
            print!("{}", options::usage());
            return;
        }
        Action::Version => {
            print!("{}", options::version());
            return;
        }
        Action::Mount(config) => config,
    };
    if fake {
        // mount -f: the command line is valid; mount nothing.
        return;
    }
    ovlfs::logging::init(config.debug);
    log_panics();
    std::process::exit(ovlfs::mount::run(&config));
}

/// Once the daemon has detached its stderr is /dev/null: panics (a request handler's, which
/// the mount survives) are logged to syslog instead, at most a few a minute.
fn log_panics() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !ovlfs::logging::detached() {
            default_hook(info);
            return;
        }
        let payload = info.payload();
        let what = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        ovlfs::logging::error_limited("panic", format_args!("thread {name} panicked{at}: {what}"));
    }));
}
