//! Directory redirects between ovlfs and the kernel (`redirect_dir=on`).
