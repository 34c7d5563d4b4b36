//! Who is at the other end of the owner's socket. Both ends check the other with the
//! kernel's peer credentials (SO_PEERCRED): the owner serves only processes of its own
//! user, and a client talks only to an owner of its own user, found through a socket file
//! of its own in a home of its own. So another local user can neither read runs through a
//! socket left reachable by loose permissions, nor answer in the owner's place.

use crate::error::{BatonError, BatonResult, ErrorCode};
use crate::home::{Home, SocketFile, euid};
use std::io::ErrorKind;
use tokio::net::UnixStream;

/// The outcome of dialling the owner.
pub enum Dial {
    /// Connected to an owner of this user, whose pid is given.
    Connected(UnixStream, u32),
    /// Nobody listens: no socket file, or a stale one.
    NoOwner,
}

/// Connect to the owner of `home`, checking the socket file before and the listening
/// process after connecting.
pub async fn dial(home: &Home) -> BatonResult<Dial> {
    if home.socket_file()? == SocketFile::Missing {
        return Ok(Dial::NoOwner);
    }
    let path = home.socket_path();
    let stream = match UnixStream::connect(&path).await {
        Ok(stream) => stream,
        // A stale socket of an owner that is gone, or one being replaced right now. A full
        // accept queue (EAGAIN) also counts: the caller retries for a while.
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused | ErrorKind::WouldBlock) => {
            return Ok(Dial::NoOwner);
        }
        Err(e) => {
            return Err(BatonError::storage(
                format!("cannot connect to {}: {e}", path.display()),
                "Check the baton home permissions (it must be yours, mode 0700).",
            ));
        }
    };
    let cred = stream.peer_cred().map_err(|e| BatonError::storage(format!("cannot check who serves {}: {e}", path.display()), "Retry."))?;
    let pid = cred.pid().map_or(0, |p| p as u32);
    check_same_user(cred.uid(), pid, &path.display().to_string())?;
    Ok(Dial::Connected(stream, pid))
}

/// A client refuses an owner of another user.
fn check_same_user(peer_uid: u32, peer_pid: u32, socket: &str) -> BatonResult<()> {
    let me = euid();
    if peer_uid == me {
        return Ok(());
    }
    Err(BatonError::storage(
        format!(
            "the process serving {socket} (pid {peer_pid}) runs as uid {peer_uid}, not as you (uid {me}); baton does not talk to another user's process"
        ),
        "Point BATON_HOME at a directory of your own; if this home is yours, stop that process and retry.",
    ))
}

/// The owner's check of a new connection: `Err` carries the refusal to send before closing.
pub fn admit(stream: &UnixStream) -> Result<(), BatonError> {
    let cred = stream.peer_cred().map_err(|e| BatonError::internal(format!("cannot read the peer's credentials: {e}")))?;
    let me = euid();
    if cred.uid() == me {
        return Ok(());
    }
    Err(BatonError::new(
        ErrorCode::Unavailable,
        format!("this baton owner serves uid {me} only; your process runs as uid {}", cred.uid()),
        "Use a baton home of your own (BATON_HOME); each user has their own database.",
    ))
}

/// A process as a person should see it in an error: pid, command line and whether it is
/// stopped, e.g. ``pid 4242 (`baton owner --home /h`), stopped``.
pub fn describe(pid: u32) -> String {
    let command = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(String::from_utf8_lossy).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let command: String = command.chars().take(200).collect();
    let state = match state(pid) {
        Some('T') | Some('t') => ", stopped",
        Some('Z') => ", exited",
        Some(_) => "",
        None => ", no longer running",
    };
    if command.is_empty() { format!("pid {pid}{state}") } else { format!("pid {pid} (`{command}`){state}") }
}

/// The process's scheduler state letter from /proc (`T` = stopped), if it exists.
pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_users_owner_is_refused_by_name() {
        let me = euid();
        assert!(check_same_user(me, 1, "/h/baton.sock").is_ok());
        let err = check_same_user(me + 1, 4242, "/h/baton.sock").unwrap_err();
        assert_eq!(err.code, ErrorCode::Storage);
        assert!(err.message.contains("pid 4242") && err.message.contains(&format!("uid {}", me + 1)), "{err}");
    }

    #[test]
    fn processes_are_described_with_their_command() {
        let me = std::process::id();
        let text = describe(me);
        assert!(text.starts_with(&format!("pid {me} (`")), "{text}");
        assert!(!text.contains("stopped"));
        assert!(describe(u32::MAX - 1).ends_with("no longer running"));
    }
}
