use std::mem::align_of;

use crate::ll::fuse_abi as abi;
use crate::session::MAX_WRITE_SIZE;

/// Size of the buffer for reading a request from the kernel. Since the kernel may send
/// up to `MAX_WRITE_SIZE` bytes in a write request, we use that value plus some extra space.
const BUFFER_SIZE: usize = MAX_WRITE_SIZE + 4096;
/// ovlfs patch: the largest request the kernel sends by default (`fs.fuse.max_pages_limit`,
/// 256 pages, of data plus the headers).
const PREFAULT: usize = (256 + 2) * 4096;

/// A buffer that provides an aligned sub-slice for FUSE operations.
///
/// This struct wraps a `Vec<u8>` and provides access to an aligned portion
/// of the buffer, ensuring proper alignment for `fuse_in_header`.
#[derive(Debug)]
pub(crate) struct FuseReadBuf {
    buffer: Vec<u8>,
}

impl FuseReadBuf {
    /// Creates a new `FuseReadBuf` with the default buffer size.
    ///
    /// The actual buffer may be slightly larger to accommodate alignment requirements.
    pub(crate) fn new() -> Self {
        let mut buffer = vec![0; BUFFER_SIZE];
        // ovlfs patch: the pages a request can fill are made present now. The kernel copies
        // a request into the reader's buffer after taking it off its queue; where a page is
        // missing it must fault it in, which fails once the reading process has a fatal
        // signal pending, and the kernel then ends the request with EIO instead of leaving
        // it for the next reader. A worker killed while a thread takes its first requests
        // (or a big WRITE) would fail a caller or lose written-back data.
        for at in (0..PREFAULT.min(BUFFER_SIZE)).step_by(4096) {
            buffer[at] = 1;
        }
        Self {
            buffer: std::hint::black_box(buffer),
        }
    }

    /// Returns a mutable reference to the aligned portion of the buffer.
    pub(crate) fn as_mut(&mut self) -> &mut [u8] {
        let alignment = align_of::<abi::fuse_in_header>();
        let off = alignment - (self.buffer.as_ptr() as usize) % alignment;
        if off == alignment {
            &mut self.buffer
        } else {
            &mut self.buffer[off..]
        }
    }
}
