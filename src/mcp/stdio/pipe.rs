//! stdin and stdout read and written on the runtime's own thread when they are pipes or
//! stream sockets (as Codex and every MCP client spawn a server), else through tokio's stdio.
//!
//! Why: tokio's `stdin()` and `stdout()` do each read and write on a thread of its blocking
//! pool, which then wakes the runtime thread: two thread hand-offs on every request's path
//! (the line in, the answer out), each a wake-up that may cross cores (issue 22). A pipe
//! or socket can be polled instead: with `O_NONBLOCK` set on it, tokio's reactor tells
//! the runtime thread when a read or write can go on, and the thread does the system call
//! itself. Regular files, `/dev/null` and terminals cannot be polled well (epoll refuses
//! files; a terminal is shared with the shell, whose flags this would change), so those
//! keep tokio's stdio. The descriptor's flags are put back when the process lets go of it.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// One of the process's standard descriptors, set non-blocking while this lives.
struct Fd {
    fd: RawFd,
    /// Its file status flags before, put back on drop.
    flags: libc::c_int,
}

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: fcntl on a descriptor number; a closed one only returns EBADF.
        unsafe { libc::fcntl(self.fd, libc::F_SETFL, self.flags) };
    }
}

/// A pipe or socket among the standard descriptors, polled by the runtime.
pub struct Polled(AsyncFd<Fd>);

/// A descriptor's file (device and inode), and whether it is a pipe or a stream socket.
fn file_of(fd: RawFd) -> Option<((u64, u64), bool)> {
    // SAFETY: fstat fills the zeroed struct it is given; the result is checked.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return None;
    }
    let kind = stat.st_mode & libc::S_IFMT;
    Some(((stat.st_dev as u64, stat.st_ino as u64), kind == libc::S_IFIFO || (kind == libc::S_IFSOCK && is_stream_socket(fd))))
}

/// Whether socket `fd` is a stream socket: `polled::poll_read` takes a read that leaves room
/// for an emptied descriptor, which a datagram or packet socket (one message per read) is not.
fn is_stream_socket(fd: RawFd) -> bool {
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `kind`; the result is checked.
    let got = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE, (&mut kind as *mut libc::c_int).cast(), &mut len) };
    got == 0 && kind == libc::SOCK_STREAM
}

impl Polled {
    /// `fd` made pollable, `flags` being its flags before any of this. Its file status
    /// flags belong to the open file, shared by every descriptor of it.
    fn open(fd: RawFd, flags: libc::c_int, interest: Interest) -> Option<Polled> {
        // SAFETY: fcntl on a descriptor number this process holds (fstat saw it).
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } != 0 {
            return None;
        }
        // On failure the Fd is dropped and its flags put back.
        // SAFETY: stdin and stdout stay open, the same files, for the whole process: baton
        // never closes or replaces its standard descriptors.
        unsafe { AsyncFd::register_with_interest(Fd { fd, flags }, interest) }.ok().map(Polled)
    }
}

/// A `read` or `write` return value as bytes done, or the error it set.
fn counted(n: isize) -> io::Result<usize> {
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

impl AsyncRead for Polled {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        // SAFETY: read into the initialized, unfilled part of the buffer, at most its length.
        crate::polled::poll_read(&self.0, cx, buf, |fd, into| {
            counted(unsafe { libc::read(fd.as_raw_fd(), into.as_mut_ptr().cast(), into.len()) })
        })
    }
}

impl AsyncWrite for Polled {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        // SAFETY: write from a live slice, at most its length.
        crate::polled::poll_write(&self.0, cx, |fd| counted(unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) }))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing is buffered here: each write went to the descriptor.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The process's stdin: polled, or tokio's.
pub enum Stdin {
    Polled(Polled),
    Tokio(tokio::io::Stdin),
}

/// The process's stdout: polled, or tokio's.
pub enum Stdout {
    Polled(Polled),
    Tokio(tokio::io::Stdout),
}

/// stdin and stdout, each polled where it can be. Needs a tokio runtime.
///
/// A pipe that is stderr too (`2>&1`) is left to tokio: non-blocking, stderr's log lines
/// could fail with "try again" and be lost.
pub fn open() -> (Stdin, Stdout) {
    let stderr = file_of(libc::STDERR_FILENO).map(|(file, _)| file);
    let pollable = |fd: RawFd| {
        let (file, pipe) = file_of(fd)?;
        // SAFETY: fcntl on a descriptor number this process holds (fstat saw it).
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        (pipe && Some(file) != stderr && flags >= 0).then_some(flags)
    };
    // Both flags are read before either is changed: stdin and stdout may be one socket.
    let (in_flags, out_flags) = (pollable(libc::STDIN_FILENO), pollable(libc::STDOUT_FILENO));
    let stdin = in_flags.and_then(|flags| Polled::open(libc::STDIN_FILENO, flags, Interest::READABLE));
    let stdout = out_flags.and_then(|flags| Polled::open(libc::STDOUT_FILENO, flags, Interest::WRITABLE));
    (
        stdin.map_or_else(|| Stdin::Tokio(tokio::io::stdin()), Stdin::Polled),
        stdout.map_or_else(|| Stdout::Tokio(tokio::io::stdout()), Stdout::Polled),
    )
}

impl AsyncRead for Stdin {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stdin::Polled(p) => Pin::new(p).poll_read(cx, buf),
            Stdin::Tokio(t) => Pin::new(t).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stdout {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stdout::Polled(p) => Pin::new(p).poll_write(cx, data),
            Stdout::Tokio(t) => Pin::new(t).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stdout::Polled(p) => Pin::new(p).poll_flush(cx),
            Stdout::Tokio(t) => Pin::new(t).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stdout::Polled(p) => Pin::new(p).poll_shutdown(cx),
            Stdout::Tokio(t) => Pin::new(t).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixDatagram, UnixStream};

    #[test]
    fn only_stream_sockets_count_as_sockets_to_poll() {
        let (stream, _peer) = UnixStream::pair().unwrap();
        assert!(is_stream_socket(stream.as_raw_fd()));
        assert!(file_of(stream.as_raw_fd()).unwrap().1);
        // One message per read: a read that leaves room says nothing of what is queued.
        let (datagram, _peer) = UnixDatagram::pair().unwrap();
        assert!(!is_stream_socket(datagram.as_raw_fd()));
        assert!(!file_of(datagram.as_raw_fd()).unwrap().1, "a datagram socket is left to tokio's stdio");
        let file = tempfile::tempfile().unwrap();
        assert!(!is_stream_socket(file.as_raw_fd()) && !file_of(file.as_raw_fd()).unwrap().1);
    }
}
