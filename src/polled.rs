//! Reading and writing a descriptor that the tokio runtime polls (`AsyncFd`), shared by
//! the session's stdin and stdout (`mcp::stdio::pipe`) and the owner's socket
//! (`backend::socket`).

use std::io;
use std::task::{Context, Poll, ready};
use tokio::io::ReadBuf;
use tokio::io::unix::AsyncFd;

/// Read what `fd` has into `buf` with `read`, waiting until it is readable.
pub fn poll_read<T: std::os::fd::AsRawFd>(
    fd: &AsyncFd<T>,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
    mut read: impl FnMut(&T, &mut [u8]) -> io::Result<usize>,
) -> Poll<io::Result<()>> {
    loop {
        let mut ready = ready!(fd.poll_read_ready(cx))?;
        let unfilled = buf.initialize_unfilled();
        match ready.try_io(|inner| read(inner.get_ref(), unfilled)) {
            Ok(Ok(n)) => {
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(e)) => return Poll::Ready(Err(e)),
            // Not readable after all: the readiness was cleared, wait again.
            Err(_would_block) => continue,
        }
    }
}

/// Write with `write` once `fd` is writable, waiting until it is; what `write` returned.
pub fn poll_write<T: std::os::fd::AsRawFd>(
    fd: &AsyncFd<T>,
    cx: &mut Context<'_>,
    mut write: impl FnMut(&T) -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        let mut ready = ready!(fd.poll_write_ready(cx))?;
        match ready.try_io(|inner| write(inner.get_ref())) {
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(done) => return Poll::Ready(done),
            // Not writable after all: the readiness was cleared, wait again.
            Err(_would_block) => continue,
        }
    }
}
