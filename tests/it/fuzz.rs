//! Randomized hostile input, for a bounded time: random and mutated MCP lines to a live
//! `baton serve`, and random and mutated frames to its owner's socket. Every line must get
//! exactly one answer (notifications and responses none), nothing may crash or hang, and a
//! normal call must work at the end. The seed is printed; rerun one with
//! `BATON_FUZZ_SEED=<seed>`, and run longer with `BATON_FUZZ_SECS=<seconds per target>` (default 2).

use crate::support;
use crate::support::{RawMcp, alive, fresh_home, owner_pid};
use rmcp::model::NumberOrString;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// splitmix64: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

fn seed() -> u64 {
    std::env::var("BATON_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64)
}

fn budget() -> Duration {
    Duration::from_secs_f64(std::env::var("BATON_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0))
}

/// Bytes that tend to break parsers.
const SPICE: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b":",
    b",",
    b"\n",
    b"\r",
    b"\0",
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
    b"\xef\xbb\xbf",
    b"null",
    b"1e999",
    b"-0",
    b"\\u0000",
    b"\\ud800",
    b"\"id\":",
    b"\"method\":",
    b"true",
    b"9999999999999999999999",
    b" ",
];

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], line: &[u8]) -> Vec<u8> {
    let mut out = line.to_vec();
    for _ in 0..=rng.below(3) {
        let at = rng.below(out.len() + 1);
        match rng.below(9) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => {
                let spice = rng.pick(SPICE).to_vec();
                out.splice(at..at, spice);
            }
            2 => {
                let end = (at + rng.below(16)).min(out.len());
                out.drain(at..end);
            }
            3 => out.truncate(at),
            4 => {
                let end = (at + rng.below(32)).min(out.len());
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
            5 => {
                let other = rng.pick(corpus);
                let from = rng.below(other.len());
                out.splice(at..at, other[from..].iter().copied().take(rng.below(64)));
            }
            6 => {
                let random: Vec<u8> = (0..rng.below(8)).map(|_| rng.next() as u8).collect();
                out.splice(at..at, random);
            }
            7 => {
                let levels = 1 + rng.below(140);
                let text = String::from_utf8_lossy(&out).into_owned();
                out = format!("{}{text}{}", "[".repeat(levels), "]".repeat(levels)).into_bytes();
            }
            _ => {
                if let Ok(mut value) = serde_json::from_slice::<Value>(&out)
                    && let Some(object) = value.as_object_mut()
                {
                    let ids =
                        [json!(rng.next() % 1000), json!("x"), json!(1.5), json!(null), json!({}), json!(true), json!(-3), json!(2.0)];
                    object.insert("id".into(), rng.pick(&ids).clone());
                    out = serde_json::to_vec(&value).unwrap();
                }
            }
        }
    }
    out
}

fn nested(levels: usize) -> String {
    format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
}

fn mcp_corpus(run_id: &str) -> Vec<Vec<u8>> {
    let call = |id: u64, tool: &str, args: Value| {
        serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}}))
            .unwrap()
    };
    vec![
        br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#.to_vec(),
        br#"{"jsonrpc":"2.0","id":"t","method":"tools/list"}"#.to_vec(),
        call(2, "inspect", json!({"status": "open"})),
        call(3, "inspect", json!({"templates": true})),
        call(4, "inspect", json!({"run_id": run_id, "history_limit": 2})),
        call(5, "start_workflow", json!({"goal": "fuzz", "context": {"k": [1, {"a": null}]}})),
        call(6, "advance", json!({"run_id": run_id, "expected_version": 1, "outcome": "planned", "output": "o", "artifacts": {"a": {"b": [1, 2]}}})),
        call(7, "resume", json!({})),
        call(8, "advance", json!({"run_id": run_id, "expected_version": 1, "outcome": "x", "output": "o", "artifacts": {"deep": serde_json::from_str::<Value>(&nested(70)).unwrap()}})),
        format!(r#"{{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{{"name":"advance","arguments":{{"artifacts":{}}}}}}}"#, nested(110)).into_bytes(),
        br#"{"jsonrpc":"2.0","id":10,"method":"no/such/method","params":{}}"#.to_vec(),
        br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_vec(),
        br#"{"jsonrpc":"2.0","method":"notifications/whatever","params":[1]}"#.to_vec(),
        br#"{"jsonrpc":"2.0","id":11,"result":{}}"#.to_vec(),
        br#"{"jsonrpc":"2.0","id":12,"error":{"code":1,"message":"m"}}"#.to_vec(),
        br#"{"jsonrpc":"2.0","id":13,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"f","version":"0"}}}"#.to_vec(),
    ]
}

/// What the server owes one line.
#[derive(Debug, Clone, PartialEq)]
enum Owed {
    Nothing,
    /// One answer with this id (`null` for lines whose id cannot be known).
    Answer(Value),
}

/// The JSON-RPC rules, from an independent reading of the line.
fn owed(piece: &[u8]) -> Owed {
    let piece = piece.strip_suffix(b"\r").unwrap_or(piece);
    let piece = piece.strip_prefix(b"\xef\xbb\xbf").unwrap_or(piece);
    if piece.iter().all(u8::is_ascii_whitespace) {
        return Owed::Nothing;
    }
    let Ok(text) = std::str::from_utf8(piece) else { return Owed::Answer(Value::Null) };
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    let value = match serde::Deserialize::deserialize(&mut de).and_then(|v: Value| de.end().map(|()| v)) {
        Ok(value) => value,
        Err(_) => return Owed::Answer(Value::Null),
    };
    let has = |key: &str| value.get(key).is_some();
    if (has("method") && !has("id")) || (!has("method") && (has("result") || has("error"))) {
        return Owed::Nothing;
    }
    let id = value.get("id").and_then(|id| serde_json::from_value::<NumberOrString>(id.clone()).ok());
    Owed::Answer(id.map_or(Value::Null, |id| serde_json::to_value(id).unwrap()))
}

#[test]
fn random_and_mutated_mcp_lines_and_socket_frames_are_each_answered() {
    let seed = seed();
    eprintln!("fuzz seed {seed} (rerun with BATON_FUZZ_SEED={seed})");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let mut mcp = RawMcp::start(&home);
    mcp.send(&RawMcp::tool_call("s", "start_workflow", &json!({"goal": "fuzz target"})));
    let started = mcp.recv(Duration::from_secs(10)).expect("start_workflow answered");
    let run_id = started["result"]["structuredContent"]["run_id"].as_str().unwrap().to_string();
    // With PostgreSQL there is no owner and no socket: only the MCP lines are fuzzed.
    let with_owner = !support::owner_only("fuzzing the owner's socket");
    let owner = with_owner.then(|| owner_pid(&home));

    // Before the handshake, too: a session that has not been initialized yet.
    let mut fresh = RawMcp::spawn(&home);
    let (early, early_pieces) = fuzz_mcp(&mut rng, &mut fresh, &run_id, seed, budget() / 4);
    assert!(fresh.child.try_wait().unwrap().is_none(), "seed {seed}: a session fuzzed before initialize is still running");
    let (lines, pieces) = fuzz_mcp(&mut rng, &mut mcp, &run_id, seed, budget());
    let (lines, pieces) = (lines + early, pieces + early_pieces);
    let frames = if with_owner { fuzz_socket(&mut rng, &home, &run_id, seed) } else { 0 };
    eprintln!("fuzz: {lines} MCP lines ({pieces} after splitting) and {frames} socket frames, all answered");

    assert!(mcp.child.try_wait().unwrap().is_none(), "baton serve is still running (seed {seed})");
    if let Some(owner) = owner {
        assert!(alive(owner) && owner_pid(&home) == owner, "the owner is still running (seed {seed})");
    }
    mcp.send(&RawMcp::tool_call("last", "inspect", &json!({"run_id": run_id})));
    let last = mcp.recv(Duration::from_secs(10)).expect("a normal call is answered at the end");
    assert_eq!(last["id"], "last");
    assert_eq!(last["result"]["structuredContent"]["run"]["id"], run_id.as_str(), "seed {seed}: {last}");
}

/// Returns how many lines were sent, and how many lines they made once split at newlines.
fn fuzz_mcp(rng: &mut Rng, mcp: &mut RawMcp, run_id: &str, seed: u64, budget: Duration) -> (usize, usize) {
    let corpus = mcp_corpus(run_id);
    let until = Instant::now() + budget;
    let (mut lines, mut pieces) = (0, 0);
    while Instant::now() < until {
        let base = rng.pick(&corpus).clone();
        let line = if rng.chance(85) { mutate(rng, &corpus, &base) } else { base };
        let split: Vec<&[u8]> = line.split(|b| *b == b'\n').collect();
        let mut owed_ids: HashMap<String, usize> = HashMap::new();
        for piece in &split {
            if let Owed::Answer(id) = owed(piece) {
                *owed_ids.entry(id.to_string()).or_default() += 1;
            }
        }
        let sentinel = format!("sentinel-{lines}");
        mcp.send(&line);
        mcp.send(format!(r#"{{"jsonrpc":"2.0","id":"{sentinel}","method":"ping"}}"#).as_bytes());
        *owed_ids.entry(json!(sentinel).to_string()).or_default() += 1;
        let shown = String::from_utf8_lossy(&line[..line.len().min(300)]).into_owned();
        while owed_ids.values().any(|n| *n > 0) {
            let answer = mcp
                .recv(Duration::from_secs(10))
                .unwrap_or_else(|| panic!("seed {seed}: no answer within 10 s for {shown:?}; still owed {owed_ids:?}"));
            let id = answer["id"].to_string();
            let left = owed_ids.get_mut(&id).unwrap_or_else(|| panic!("seed {seed}: unexpected answer {answer} to {shown:?}"));
            assert!(*left > 0, "seed {seed}: a second answer {answer} to {shown:?}");
            *left -= 1;
            assert!(answer.get("result").is_some() != answer.get("error").is_some(), "seed {seed}: {answer}");
            if let Some(code) = answer["error"]["code"].as_i64() {
                assert!(code < 0 && answer["error"]["message"].is_string(), "seed {seed}: {answer}");
                // Baton's own answers to unreadable lines say what is wrong (rmcp's
                // method-not-found carries just the method name, which may be empty).
                if code == -32700 || code == -32600 {
                    assert!(answer["error"]["message"].as_str().is_some_and(|m| m.len() > 20), "seed {seed}: {answer}");
                }
            }
        }
        lines += 1;
        pieces += split.len();
    }
    (lines, pieces)
}

fn socket_corpus(run_id: &str) -> Vec<Vec<u8>> {
    let frame = |op: &str, params: Value| {
        serde_json::to_vec(&json!({"op_id": uuid::Uuid::new_v4().to_string(), "request": {"op": op, "params": params}})).unwrap()
    };
    vec![
        frame("list_runs", json!({})),
        frame("get_run", json!({"run_id": run_id})),
        frame("list_templates", json!({})),
        frame("resume", json!({"run_id": run_id})),
        frame("start_workflow", json!({"goal": "socket fuzz"})),
        frame("advance", json!({"run_id": run_id, "expected_version": 1, "outcome": "planned", "output": "o"})),
        frame("cancel_run", json!({"run_id": "nope"})),
        br#"{"op_id":"x","request":{"op":"drop_tables","params":{}}}"#.to_vec(),
        format!(r#"{{"op_id":"00000000-0000-4000-8000-000000000001","request":{{"op":"list_runs","params":{{"x":{}}}}}}}"#, nested(90))
            .into_bytes(),
    ]
}

/// Returns how many frames were sent.
fn fuzz_socket(rng: &mut Rng, home: &std::path::Path, run_id: &str, seed: u64) -> usize {
    let corpus = socket_corpus(run_id);
    let until = Instant::now() + budget();
    let mut stream = UnixStream::connect(home.join("baton.sock")).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answers = BufReader::new(stream.try_clone().unwrap());
    let mut frames = 0;
    while Instant::now() < until {
        let base = rng.pick(&corpus).clone();
        let mut line = if rng.chance(85) { mutate(rng, &corpus, &base) } else { base };
        let count = line.iter().filter(|b| **b == b'\n').count() + 1;
        line.push(b'\n');
        stream.write_all(&line).unwrap_or_else(|e| panic!("seed {seed}: the owner hung up: {e}"));
        let shown = String::from_utf8_lossy(&line[..line.len().min(300)]).into_owned();
        for _ in 0..count {
            let mut answer = String::new();
            answers.read_line(&mut answer).unwrap_or_else(|e| panic!("seed {seed}: no answer to {shown:?}: {e}"));
            let answer: Value =
                serde_json::from_str(&answer).unwrap_or_else(|e| panic!("seed {seed}: answer {answer:?} to {shown:?}: {e}"));
            let keys: Vec<&String> = answer.as_object().map(|o| o.keys().collect()).unwrap_or_default();
            assert!(keys == ["Ok"] || keys == ["Err"], "seed {seed}: answer {answer} to {shown:?}");
        }
        frames += count;
    }
    stream.write_all(&socket_corpus(run_id)[0]).unwrap();
    stream.write_all(b"\n").unwrap();
    let mut answer = String::new();
    answers.read_line(&mut answer).unwrap();
    assert!(answer.starts_with(r#"{"Ok""#), "seed {seed}: the connection still serves: {answer}");
    frames
}
