//! Writes the `ovlfs(8)` man page (roff) to stdout:
//!
//! ```sh
//! cargo run --example manpage > ovlfs.8
//! ```
//!
//! The page is rendered from the same option table as `ovlfs --help`; a unit test fails when
//! the committed `ovlfs.8` differs from this output.

fn main() {
    print!("{}", ovlfs::manpage::render());
}
