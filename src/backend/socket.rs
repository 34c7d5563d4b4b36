//! The owner's socket, on both ends, registered with the runtime for reading only.
//!
//! Why: tokio registers every socket it wraps for readability and writability at once
//! (edge-triggered). On a Unix stream socket, each read by the peer frees buffer space on
//! this side, and the kernel then signals "writable" to every waiter, so the epoll entry
//! wakes this process's runtime thread although nothing waits to write: once per request
//! in the owner (when the session reads its answer) and in the session (when the owner
//! reads the request), a wake-up, a context switch and an epoll round each (seen with
//! strace: an `epoll_wait` returning only EPOLLOUT after every answer; issue 22).
//!
//! Here a write goes straight to the socket. Only when the socket's buffer is full (a
//! frame larger than it, or a peer that stopped reading) does a write wait for room, through
//! a second descriptor of the same socket registered for writability alone, dropped again
//! once the write went through.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A connected Unix stream socket, polled for reading only.
pub struct Socket {
    stream: AsyncFd<UnixStream>,
    /// A duplicate descriptor, polled for writability while a write waits for room.
    room: Option<AsyncFd<OwnedFd>>,
}

impl Socket {
    /// Take over tokio's socket. Needs a tokio runtime with I/O enabled.
    pub fn new(stream: tokio::net::UnixStream) -> io::Result<Socket> {
        // `into_std` deregisters it and leaves it non-blocking.
        let stream = stream.into_std()?;
        stream.set_nonblocking(true)?;
        // SAFETY: the socket is owned by the AsyncFd and closed only when it drops.
        let stream = unsafe { AsyncFd::register_with_interest(stream, Interest::READABLE) }?;
        Ok(Socket { stream, room: None })
    }

    /// Write once, without waiting.
    fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        loop {
            match self.stream.get_ref().write(data) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                done => return done,
            }
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        crate::polled::poll_read(&self.stream, cx, buf, |mut stream, into| stream.read(into))
    }
}

impl AsyncWrite for Socket {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let room = match &this.room {
            Some(room) => room,
            None => match this.try_write(data) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Registering reports the socket writable at once if room came meanwhile,
                    // so no wake-up is lost between the two.
                    let twin = this.stream.get_ref().as_fd().try_clone_to_owned()?;
                    // SAFETY: the duplicate is owned by the AsyncFd and closed only when it drops.
                    this.room.insert(unsafe { AsyncFd::register_with_interest(twin, Interest::WRITABLE) }?)
                }
                done => return Poll::Ready(done),
            },
        };
        let done = ready!(crate::polled::poll_write(room, cx, |_| this.stream.get_ref().write(data)));
        this.room = None;
        Poll::Ready(done)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing is buffered here: each write went to the socket.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.stream.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A frame far larger than the socket's buffer waits for room and arrives whole, while
    /// the other side reads slowly; the writer's readiness registration is let go after.
    #[tokio::test]
    async fn a_write_larger_than_the_buffer_waits_for_room_and_arrives_whole() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (mut a, mut b) = (Socket::new(a).unwrap(), Socket::new(b).unwrap());
        let frame: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        let sent = frame.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&sent).await.unwrap();
            assert!(a.room.is_none(), "the writability registration outlived the write");
            a.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = b.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
            tokio::task::yield_now().await;
        }
        writer.await.unwrap();
        assert_eq!(got.len(), frame.len());
        assert!(got == frame, "the frame arrived changed");
    }

    /// The peer closing is seen as the end of the stream, and writing to a closed peer fails
    /// instead of hanging.
    #[tokio::test]
    async fn a_closed_peer_ends_reads_and_fails_writes() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (mut a, b) = (Socket::new(a).unwrap(), Socket::new(b).unwrap());
        drop(b);
        let mut buf = [0u8; 16];
        assert_eq!(a.read(&mut buf).await.unwrap(), 0);
        let written = tokio::time::timeout(std::time::Duration::from_secs(5), a.write_all(&[1u8; 1 << 20])).await;
        assert!(matches!(written, Ok(Err(_))), "{written:?}");
    }
}
