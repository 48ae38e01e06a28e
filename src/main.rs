//! The `ovlfs` command: parse the fuse-overlayfs compatible command line and mount.

use ovlfs::options::{self, Action};

fn main() {
    let action = match options::parse_args(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let config = match action {
        Action::Help => {
            print!("{}", options::usage());
            return;
        }
        Action::Version => {
            println!("{}", options::version_line());
            return;
        }
        Action::Mount(config) => config,
    };
    let level = if config.debug { "debug" } else { "warn" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    std::process::exit(ovlfs::mount::run(&config));
}
