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
    // Internal: a worker started by a mount's supervisor, with the mount's command line.
    let worker = args
        .first()
        .is_some_and(|a| a == ovlfs::supervisor::WORKER_ARG);
    let args: Vec<_> = args.into_iter().skip(usize::from(worker)).collect();
    if !worker && args.first().is_some_and(|a| a == "--upgrade") {
        match &args[1..] {
            [mountpoint] => std::process::exit(ovlfs::supervisor::upgrade(mountpoint.as_ref())),
            _ => fail("ovlfs: usage: ovlfs --upgrade MOUNTPOINT"),
        }
    }
    let action = match options::parse_args(args.clone()) {
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
    if worker {
        std::process::exit(ovlfs::mount::run_worker(&config));
    }
    std::process::exit(ovlfs::mount::run(&config, &args));
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
