//! Reading the `id` of a JSON-RPC message that cannot be parsed as a whole (too large, or
//! nested too deep), so its answer can still reach the request waiting for it. The scan is
//! iterative and reads only the top-level members before `id`.

use serde_json::Value;

/// The top-level members of a message that tell how to answer it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TopLevel {
    /// The last `id` member read (as a JSON parser keeps the last of duplicates).
    pub id: Option<Value>,
    pub method: bool,
    pub result_or_error: bool,
    /// Whether the whole object was read (else members may be missing).
    pub complete: bool,
}

impl TopLevel {
    /// A notification or a response, which are never answered.
    pub fn unanswered(&self) -> bool {
        self.complete && ((self.method && self.id.is_none()) || (!self.method && self.result_or_error))
    }
}

/// Read the top-level members of the object in `bytes` as far as they go.
pub fn top_level(bytes: &[u8]) -> TopLevel {
    let mut found = TopLevel::default();
    let mut s = Scanner { bytes, at: 0 };
    let _ = s.members(&mut found);
    found
}

/// Whether `bytes` is one valid JSON text (RFC 8259), checked without recursion, so that
/// text too deep for a recursive parser can still be told apart from garbage.
pub fn is_valid_json(bytes: &[u8]) -> bool {
    let mut s = Scanner { bytes, at: 0 };
    s.valid_document().is_some()
}

/// The `id` member of the top-level object in `bytes`, if it can be read there.
pub fn top_level_id(bytes: &[u8]) -> Option<Value> {
    top_level(bytes).id
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    fn members(&mut self, found: &mut TopLevel) -> Option<()> {
        self.skip_ws();
        self.expect(b'{')?;
        self.skip_ws();
        if self.expect(b'}').is_some() {
            found.complete = true;
            return Some(());
        }
        loop {
            self.skip_ws();
            let key_start = self.at;
            self.string()?;
            let key = &self.bytes[key_start..self.at];
            let key = key.to_vec();
            self.skip_ws();
            self.expect(b':')?;
            self.skip_ws();
            let start = self.at;
            self.value()?;
            match key.as_slice() {
                b"\"id\"" => found.id = serde_json::from_slice(&self.bytes[start..self.at]).ok(),
                b"\"method\"" => found.method = true,
                b"\"result\"" | b"\"error\"" => found.result_or_error = true,
                _ => {}
            }
            self.skip_ws();
            if self.expect(b'}').is_some() {
                found.complete = true;
                return Some(());
            }
            self.expect(b',')?;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// Skip a string token, escapes included.
    fn string(&mut self) -> Option<()> {
        self.expect(b'"')?;
        let mut escaped = false;
        loop {
            let b = self.peek()?;
            self.at += 1;
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => return Some(()),
                _ => {}
            }
        }
    }

    fn valid_document(&mut self) -> Option<()> {
        let mut open: Vec<u8> = Vec::new();
        loop {
            // A value starts here.
            self.skip_ws();
            match self.peek()? {
                c @ (b'{' | b'[') => {
                    self.at += 1;
                    self.skip_ws();
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.expect(close).is_none() {
                        open.push(c);
                        if c == b'{' {
                            self.valid_key()?;
                        }
                        continue;
                    }
                }
                b'"' => self.valid_string()?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => self.valid_number()?,
            }
            // After a value: close containers, or go on to the next member.
            loop {
                self.skip_ws();
                let Some(&container) = open.last() else {
                    return (self.at == self.bytes.len()).then_some(());
                };
                match (container, self.peek()?) {
                    (b'{', b'}') | (b'[', b']') => {
                        self.at += 1;
                        open.pop();
                    }
                    (_, b',') => {
                        self.at += 1;
                        if container == b'{' {
                            self.skip_ws();
                            self.valid_key()?;
                        }
                        break;
                    }
                    _ => return None,
                }
            }
        }
    }

    /// `"key" :`
    fn valid_key(&mut self) -> Option<()> {
        self.valid_string()?;
        self.skip_ws();
        self.expect(b':')
    }

    fn valid_string(&mut self) -> Option<()> {
        self.expect(b'"')?;
        loop {
            let b = self.peek()?;
            self.at += 1;
            match b {
                b'"' => return Some(()),
                b'\\' => match self.peek()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                    b'u' => {
                        self.at += 1;
                        // As serde_json: UTF-16 surrogates must come in pairs.
                        match self.hex4()? {
                            0xDC00..=0xDFFF => return None,
                            0xD800..=0xDBFF => {
                                self.literal(b"\\u")?;
                                if !(0xDC00..=0xDFFF).contains(&self.hex4()?) {
                                    return None;
                                }
                            }
                            _ => {}
                        }
                    }
                    _ => return None,
                },
                0..=0x1f => return None,
                _ => {}
            }
        }
    }

    /// Four hex digits, as a number.
    fn hex4(&mut self) -> Option<u32> {
        let hex = std::str::from_utf8(self.bytes.get(self.at..self.at + 4)?).ok()?;
        let n = u32::from_str_radix(hex, 16).ok().filter(|_| hex.bytes().all(|b| b.is_ascii_hexdigit()))?;
        self.at += 4;
        Some(n)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        (self.bytes.get(self.at..self.at + word.len())? == word).then(|| self.at += word.len())
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn valid_number(&mut self) -> Option<()> {
        let digits = |s: &mut Self| {
            let start = s.at;
            while s.peek().is_some_and(|b| b.is_ascii_digit()) {
                s.at += 1;
            }
            (s.at > start).then_some(())
        };
        let start = self.at;
        let _ = self.expect(b'-');
        if self.expect(b'0').is_none() {
            digits(self)?;
        }
        if self.expect(b'.').is_some() {
            digits(self)?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            digits(self)?;
        }
        // As serde_json: a number too large for an f64 is an error.
        let text = std::str::from_utf8(&self.bytes[start..self.at]).ok()?;
        text.parse::<f64>().ok().filter(|n| n.is_finite()).map(|_| ())
    }

    /// Skip one value of any kind and depth.
    fn value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => depth -= 1,
                        _ => {}
                    }
                    self.at += 1;
                    if depth == 0 {
                        return Some(());
                    }
                }
            }
            _ => {
                let start = self.at;
                while !matches!(self.peek(), None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n')) {
                    self.at += 1;
                }
                // A scalar must end inside the bytes we have, or it may be cut short.
                (self.at > start && self.peek().is_some()).then_some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_the_id_wherever_it_is_among_the_top_level_members() {
        let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(top_level_id(br#"{"jsonrpc":"2.0","id":7,"method":"x"}"#), Some(json!(7)));
        assert_eq!(top_level_id(br#" { "method" : "a\"}", "params":{"id":1,"x":[{}]}, "id" : "r-1" }"#), Some(json!("r-1")));
        assert_eq!(top_level_id(format!(r#"{{"params":{deep},"id":3}}"#).as_bytes()), Some(json!(3)));
        assert_eq!(top_level_id(format!(r#"{{"id":9,"params":{deep}"#).as_bytes()), Some(json!(9)));
        assert_eq!(top_level_id(br#"{"params":{"id":1}}"#), None);
        assert_eq!(top_level_id(br#"{"params":[1,2"#), None, "cut short before any id");
        assert_eq!(top_level_id(br#"{"id":12"#), None, "a number cut short is not trusted");
        for valid in [
            r#""\ud83d\ude00""#,
            "1e-999",
            "123456789012345678901234567890",
            r#"{}"#,
            r#"[]"#,
            r#" {"a" : [1, -2.5e+3, "x\"\u00e9", true, false, null, {}]} "#,
            "0",
            r#""s""#,
        ] {
            assert!(is_valid_json(valid.as_bytes()), "{valid}");
            assert!(serde_json::from_str::<Value>(valid).is_ok());
        }
        for invalid in [
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
            "1e999",
            "-1e400",
            r#"{"a" 1}"#,
            r#"[1,]"#,
            r#"{"a":1,}"#,
            "01",
            "1.",
            "-",
            r#""\x""#,
            "[1] [2]",
            "tru",
            r#"{"a":1"#,
            "\"a\u{1}\"",
            "{,}",
        ] {
            assert!(!is_valid_json(invalid.as_bytes()), "{invalid}");
            assert!(serde_json::from_str::<Value>(invalid).is_err(), "{invalid}");
        }
        assert!(is_valid_json(deep.as_bytes()));
        assert!(!is_valid_json(format!("{deep},").as_bytes()));
        assert_eq!(top_level_id(br#"{"id":1,"x":2,"id":"two"}"#), Some(json!("two")), "the last of duplicates");
        let notification = top_level(format!(r#"{{"method":"m","params":{deep}}}"#).as_bytes());
        assert!(notification.unanswered() && notification.complete);
        assert!(!top_level(format!(r#"{{"method":"m","id":1,"params":{deep}}}"#).as_bytes()).unanswered());
        assert!(!top_level(br#"{"method":"m","params":[1"#).unanswered(), "cut short: cannot tell");
        assert_eq!(top_level_id(b"[1,2]"), None);
        assert_eq!(top_level_id(b"garbage"), None);
    }
}
