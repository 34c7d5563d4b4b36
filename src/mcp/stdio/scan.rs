//! Reading the `id` of a JSON-RPC message that cannot be parsed as a whole (too large, or
//! nested too deep), so its answer can still reach the request waiting for it. The scan is
//! iterative and reads only the top-level members before `id`.

use serde_json::Value;

/// The `id` member of the top-level object in `bytes`, if it can be read there.
pub fn top_level_id(bytes: &[u8]) -> Option<Value> {
    let mut s = Scanner { bytes, at: 0 };
    s.skip_ws();
    s.expect(b'{')?;
    loop {
        s.skip_ws();
        let key_start = s.at;
        s.string()?;
        let is_id = &bytes[key_start..s.at] == b"\"id\"";
        s.skip_ws();
        s.expect(b':')?;
        s.skip_ws();
        let start = s.at;
        s.value()?;
        if is_id {
            return serde_json::from_slice(&bytes[start..s.at]).ok();
        }
        s.skip_ws();
        s.expect(b',')?;
    }
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
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
        assert_eq!(top_level_id(b"[1,2]"), None);
        assert_eq!(top_level_id(b"garbage"), None);
    }
}
