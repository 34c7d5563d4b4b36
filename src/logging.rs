//! Logging setup shared by every baton command. Logs go to stderr (stdout carries only
//! protocol messages), or to `$BATON_LOG_FILE`; the filter comes from `$BATON_LOG`.
//!
//! Logging never panics on a failed write: the owner's log is
//! `owner.log` in the home, on the same disk as the database, so when that disk is full
//! every log line fails too. tracing-subscriber reports a failed write with `eprintln!`,
//! which panics when stderr (that same file) cannot be written either; that panic once
//! took down sled's I/O thread in the middle of a write, and the writer then waited for it
//! forever. So lines go through [`Sink`], which drops a line it cannot write, counts it,
//! and, at the first line it can write again, says how many were lost.

use std::fs::File;
use std::io::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Log lines dropped since the process started, because they could not be written.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// How many of those a later line has already reported.
static REPORTED: AtomicU64 = AtomicU64::new(0);

/// Install the global subscriber with `default` as the filter unless `$BATON_LOG` is set.
pub fn init(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BATON_LOG").unwrap_or_else(|_| default.into());
    let file = std::env::var_os("BATON_LOG_FILE").and_then(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).ok());
    let sink = Sink { file: file.map(Mutex::new) };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        // The sink never reports a failure; this also turns off the `eprintln!` fallback.
        .log_internal_errors(false)
        .with_writer(sink)
        .try_init();
}

/// Where log lines go: the `BATON_LOG_FILE` file, else stderr.
pub struct Sink {
    file: Option<Mutex<File>>,
}

impl Sink {
    /// Write one formatted line; a line that cannot be written is counted and dropped.
    /// The first line written after drops is preceded by a notice of how many were lost.
    fn write_line(&self, line: &[u8]) {
        let (dropped, reported) = (DROPPED.load(Ordering::Relaxed), REPORTED.load(Ordering::Relaxed));
        if dropped > reported {
            let notice = format!("baton: {} log line(s) could not be written (is the disk full?) and were dropped\n", dropped - reported);
            if self.write_raw(notice.as_bytes()).is_err() {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                return;
            }
            REPORTED.fetch_max(dropped, Ordering::Relaxed);
        }
        if self.write_raw(line).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn write_raw(&self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        match &self.file {
            Some(file) => file.lock().unwrap_or_else(|p| p.into_inner()).write_all(bytes),
            None => io::stderr().lock().write_all(bytes),
        }
    }
}

/// One event's writer: tracing-subscriber formats the whole line first and hands it over
/// in one `write_all`, so each `write` here is one line.
pub struct LineWriter<'a>(&'a Sink);

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_line(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter;

    #[test]
    fn a_line_that_cannot_be_written_is_dropped_counted_and_reported_later() {
        // /dev/full fails every write with ENOSPC, as a full disk does.
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let sink = Sink { file: Some(Mutex::new(full)) };
        let before = DROPPED.load(Ordering::Relaxed);
        for _ in 0..3 {
            assert_eq!(sink.make_writer().write(b"a line\n").unwrap(), 7, "the caller never sees the failure");
            sink.make_writer().write_all(b"another line\n").unwrap();
        }
        assert!(DROPPED.load(Ordering::Relaxed) >= before + 6);
        // Space is back: the next line is preceded by how many were lost.
        let tmp = tempfile::NamedTempFile::new().unwrap();
        *sink.file.as_ref().unwrap().lock().unwrap() = tmp.reopen().unwrap();
        sink.make_writer().write_all(b"after\n").unwrap();
        let text = std::fs::read_to_string(tmp.path()).unwrap();
        let (notice, after) = text.split_once('\n').unwrap();
        assert!(notice.contains("log line(s) could not be written") && after == "after\n", "{text:?}");
        let lost: u64 = notice.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(lost >= 6, "{notice}");
    }
}
