//! Reading and writing a descriptor that the tokio runtime polls (`AsyncFd`), shared by
//! the session's stdin and stdout (`mcp::stdio::pipe`) and the owner's socket
//! (`backend::socket`).

use std::io;
use std::task::{Context, Poll, ready};
use tokio::io::ReadBuf;
use tokio::io::unix::AsyncFd;

/// Read what `fd` (a pipe or a stream socket) has into `buf` with `read`, waiting until it
/// is readable.
pub fn poll_read<T: std::os::fd::AsRawFd>(
    fd: &AsyncFd<T>,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
    mut read: impl FnMut(&T, &mut [u8]) -> io::Result<usize>,
) -> Poll<io::Result<()>> {
    loop {
        let mut ready = ready!(fd.poll_read_ready(cx))?;
        let unfilled = buf.initialize_unfilled();
        let unfilled_len = unfilled.len();
        match ready.try_io(|inner| read(inner.get_ref(), unfilled)) {
            Ok(Ok(n)) => {
                // A pipe or stream socket reads all it holds, up to the room given: a
                // read that left room emptied it. Forgetting the readiness now saves the
                // read that would only say "try again" (one system call per message on
                // each end; issue 22). Data arriving after the read is a new edge that
                // epoll reports; one that came before it is caught by tokio's tick, which
                // keeps the readiness set if the reactor saw a newer event.
                if n > 0 && n < unfilled_len {
                    ready.clear_ready();
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// `poll_read` on `fd` into `buf`, counting the reads it makes in `reads`.
    fn poll_counted(fd: &AsyncFd<UnixStream>, buf: &mut [u8], reads: &AtomicUsize) -> Poll<io::Result<usize>> {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut buf = ReadBuf::new(buf);
        let polled = poll_read(fd, &mut cx, &mut buf, |mut stream, into| {
            reads.fetch_add(1, Ordering::SeqCst);
            stream.read(into)
        });
        polled.map_ok(|()| buf.filled().len())
    }

    /// What the next read of `fd` brings (waiting up to 5 s for it), or `None` on timeout.
    async fn next_read(fd: &AsyncFd<UnixStream>, buf: &mut [u8]) -> Option<Vec<u8>> {
        let read = std::future::poll_fn(|cx| {
            let mut b = ReadBuf::new(buf);
            poll_read(fd, cx, &mut b, |mut stream, into| stream.read(into)).map_ok(|()| b.filled().to_vec())
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), read).await.ok().map(|r| r.unwrap())
    }

    #[tokio::test]
    async fn a_read_that_leaves_room_waits_without_reading_again_and_misses_nothing() {
        let (mut peer, ours) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        // SAFETY: the socket is owned here and outlives its registration.
        let fd = unsafe { AsyncFd::register_with_interest(ours, tokio::io::Interest::READABLE) }.ok().unwrap();
        let reads = AtomicUsize::new(0);
        let mut buf = [0u8; 64];
        peer.write_all(b"one\n").unwrap();
        fd.readable().await.unwrap().retain_ready();
        assert!(matches!(poll_counted(&fd, &mut buf, &reads), Poll::Ready(Ok(4))));
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // The short read emptied the socket: the next poll waits, with no read that would
        // only say "try again".
        assert!(poll_counted(&fd, &mut buf, &reads).is_pending());
        assert_eq!(reads.load(Ordering::SeqCst), 1, "no read after a short one");
        // What arrives after is reported by the reactor and read.
        peer.write_all(b"two\n").unwrap();
        let got = next_read(&fd, &mut buf).await.expect("data written after a short read is not missed");
        assert_eq!(got, b"two\n");
        // A read that fills the room may leave more behind: it is read on the next poll.
        peer.write_all(&[b'x'; 100]).unwrap();
        fd.readable().await.unwrap().retain_ready();
        assert!(matches!(poll_counted(&fd, &mut buf, &reads), Poll::Ready(Ok(64))));
        assert!(matches!(poll_counted(&fd, &mut buf, &reads), Poll::Ready(Ok(36))));
        drop(peer);
        let eof = next_read(&fd, &mut buf).await.expect("the peer's close is seen after a short read");
        assert!(eof.is_empty(), "end of stream");
    }
}
