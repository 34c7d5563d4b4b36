use super::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// Feed `input` to a transport and collect the messages it delivers, then the answer lines
/// it wrote on its own.
async fn run(input: Vec<u8>) -> (Vec<ClientJsonRpcMessage>, Vec<Value>) {
    let (mut client_in, server_in) = tokio::io::duplex(1024 * 1024);
    let (server_out, client_out) = tokio::io::duplex(1024 * 1024);
    let mut transport = HardenedStdio::new(server_in, server_out);
    let feeder = tokio::spawn(async move {
        client_in.write_all(&input).await.unwrap();
    });
    let mut delivered = Vec::new();
    while let Some(message) = transport.receive().await {
        delivered.push(message);
    }
    feeder.await.unwrap();
    transport.close().await.unwrap();
    drop(transport);
    let mut answers = Vec::new();
    let mut lines = tokio::io::BufReader::new(client_out).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        answers.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}")));
    }
    (delivered, answers)
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;

#[tokio::test]
async fn every_bad_line_gets_one_answer_and_good_lines_pass() {
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{{"name":"x","arguments":{{"a":{}1{}}}}}}}"#,
        "[".repeat(150),
        "]".repeat(150)
    );
    let mut big = br#"{"jsonrpc":"2.0","id":"big","method":"tools/call","params":{"x":""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', MAX_LINE_BYTES + 10));
    big.extend_from_slice(b"\"}}\n");
    let mut input = Vec::new();
    input.extend_from_slice(b"this is not json\n");
    input.extend_from_slice(b"{\"id\": \xff\xfe}\n");
    input.extend_from_slice(b"   \n");
    input.extend_from_slice(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    input.push(b'\n');
    input.extend_from_slice(deep.as_bytes());
    input.push(b'\n');
    input.extend_from_slice(&big);
    input.extend_from_slice(br#"{"jsonrpc":"2.0","id":3,"method":5}"#);
    input.push(b'\n');
    input.extend_from_slice(br#"[1,2]"#);
    input.push(b'\n');
    input.extend_from_slice(INIT.as_bytes());
    input.push(b'\n');
    input.extend_from_slice(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    input.push(b'\n');
    input.extend_from_slice(br#"{"jsonrpc":"2.0","method":"no/such","params":5}"#);
    input.push(b'\n');
    input.extend_from_slice(br#"{"jsonrpc":"2.0","id":9,"result":{}}"#);
    input.push(b'\n');
    input.extend_from_slice(br#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#); // last line, no newline

    let (delivered, answers) = run(input).await;
    let codes: Vec<(Value, i64)> = answers.iter().map(|a| (a["id"].clone(), a["error"]["code"].as_i64().unwrap())).collect();
    assert_eq!(
        codes,
        vec![
            (Value::Null, -32700),
            (Value::Null, -32700),
            (json!(5), -32700),
            (json!("big"), -32600),
            (json!(3), -32600),
            (Value::Null, -32600),
        ],
        "{answers:#?}"
    );
    assert!(answers[1]["error"]["message"].as_str().unwrap().contains("UTF-8"));
    assert!(answers[2]["error"]["message"].as_str().unwrap().contains("100 levels"));
    assert!(answers[3]["error"]["message"].as_str().unwrap().contains("16777216"));
    assert_eq!(answers[3]["error"]["data"]["limit_bytes"], MAX_LINE_BYTES);
    // initialize, the notification after it, the response, and the last ping.
    assert_eq!(delivered.len(), 4, "{delivered:#?}");
    assert!(matches!(&delivered[0], JsonRpcMessage::Request(r) if matches!(r.request, ClientRequest::InitializeRequest(_))));
    assert!(matches!(&delivered[1], JsonRpcMessage::Notification(_)));
    assert!(matches!(&delivered[2], JsonRpcMessage::Response(_)));
    assert!(matches!(&delivered[3], JsonRpcMessage::Request(r) if r.id == NumberOrString::Number(2)));
}
