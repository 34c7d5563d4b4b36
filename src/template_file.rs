//! Reading a `template_file` in the calling process, never in the database owner: a path
//! could name a FIFO, a device or `/dev/stdin`, which would block or bloat the owner and
//! every session it serves. Only regular files up to [`MAX_TEMPLATE_FILE_BYTES`] are read,
//! and errors never quote values or free text from the file (only identifiers: step and key
//! names, paths, expected punctuation): the path could name any file the user can read.

use crate::engine::Template;
use crate::error::{BatonError, BatonResult};
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Largest template file read.
pub const MAX_TEMPLATE_FILE_BYTES: u64 = 256 * 1024;

/// Words of template errors that may be shown: the template's own vocabulary. Anything
/// else in quotes came from the file and is replaced by `…`.
const VOCABULARY: &[&str] =
    &["name", "description", "start", "steps", "role", "instructions", "outcomes", "max_visits", "done", "failed", "template_file"];

/// Read and validate the template at `path` (relative paths against `cwd`).
pub fn read(path: &str, cwd: &Path) -> BatonResult<Template> {
    let full: PathBuf = cwd.join(path);
    let unreadable = |why: &str| {
        BatonError::invalid(
            "template_file",
            format!("cannot use template file {}: {why}", full.display()),
            "Pass the path of a readable .toml or .json template file (relative to the working directory).",
        )
    };
    // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below anyway.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_nonblock())
        .open(&full)
        .map_err(|_| unreadable("it does not exist or cannot be read"))?;
    let meta = file.metadata().map_err(|_| unreadable("it does not exist or cannot be read"))?;
    if !meta.is_file() {
        return Err(unreadable("it is not a regular file"));
    }
    if meta.len() > MAX_TEMPLATE_FILE_BYTES {
        return Err(BatonError::new(
            crate::error::ErrorCode::TooLarge,
            format!("template file {} is {} bytes; the limit is {MAX_TEMPLATE_FILE_BYTES} bytes", full.display(), meta.len()),
            "Templates are small: check the path names a template file.",
        )
        .with_field("template_file"));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_TEMPLATE_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|_| unreadable("it could not be read"))?;
    let text = String::from_utf8(bytes).map_err(|_| unreadable("it is not UTF-8 text"))?;
    let is_toml = full.extension().is_some_and(|e| e == "toml");
    Template::parse(&text, is_toml, "template_file").map_err(|mut e| {
        e.message = redact(&e.message);
        e.fix = redact(&e.fix);
        e
    })
}

/// Whether a part quoted in backticks names something (a step, a key, a path such as
/// `steps[0].outcomes`, or an expected `]`) rather than quoting free text: parse errors put
/// identifiers in backticks and values in double quotes, and identifiers are what a person
/// needs to find the mistake.
fn is_identifier(text: &str) -> bool {
    let punctuation = text.len() == 1 && "[]{}=,.:\"'".contains(text);
    let name = !text.is_empty() && text.len() <= 64 && text.chars().all(|c| c.is_ascii_alphanumeric() || "_-.[]".contains(c));
    punctuation || name
}

/// `message` with every quoted part that is neither template vocabulary nor (in
/// backticks) an identifier replaced by `…`: values and free text from the file never show.
fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = rest.as_bytes()[open] as char;
        let Some(len) = rest[open + 1..].find(quote) else { break };
        let inner = &rest[open + 1..open + 1 + len];
        out.push_str(&rest[..open]);
        out.push(quote);
        let shown = VOCABULARY.contains(&inner) || (quote == '`' && is_identifier(inner));
        out.push_str(if shown { inner } else { "…" });
        out.push(quote);
        rest = &rest[open + len + 2..];
    }
    out.push_str(rest);
    out
}

fn libc_o_nonblock() -> i32 {
    // O_NONBLOCK on Linux; std exposes no constant and libc is not a dependency.
    0o4000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_file_content_is_redacted_but_vocabulary_stays() {
        let message =
            "at `steps[0].max_visits`: invalid type: string \"AKIA-SECRET-1\", expected u32; `max_visits` `my password is hunter2`";
        let redacted = redact(message);
        assert!(!redacted.contains("AKIA") && !redacted.contains("hunter2"), "{redacted}");
        assert!(redacted.contains("`max_visits`") && redacted.contains("`steps[0].max_visits`"), "{redacted}");
        // Identifiers stay: an unknown target, a key, an expected bracket.
        let message = "step `review` goes to unknown step `deploy`; unknown field `outcome`, expected `]`";
        assert_eq!(redact(message), message);
    }

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let err = read("/dev/zero", dir.path()).unwrap_err();
        assert!(err.message.contains("not a regular file"), "{}", err.message);
        let err = read("missing.toml", dir.path()).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("template_file"));
        let fifo = dir.path().join("pipe.toml");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert!(read("pipe.toml", dir.path()).unwrap_err().message.contains("not a regular file"), "a FIFO never blocks");
        std::fs::write(dir.path().join("big.json"), vec![b' '; MAX_TEMPLATE_FILE_BYTES as usize + 1]).unwrap();
        assert_eq!(read("big.json", dir.path()).unwrap_err().code, crate::error::ErrorCode::TooLarge);
        std::fs::write(dir.path().join("secret.toml"), "name = \"top secret value\"\n[[steps]]\nname = 3\n").unwrap();
        let err = read("secret.toml", dir.path()).unwrap_err();
        assert!(!err.message.contains("secret value") && !err.fix.contains("secret value"), "{err}");
        std::fs::write(dir.path().join("ok.toml"), "name = \"t\"\n[[steps]]\nname = \"a\"\nrole = \"x\"\noutcomes = { ok = \"done\" }\n")
            .unwrap();
        assert_eq!(read("ok.toml", dir.path()).unwrap().name, "t");
    }
}
