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

#[test]
fn a_tool_call_takes_the_short_parse_and_reads_as_rmcp_reads_it() {
    let line = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"advance","arguments":{"run_id":"r","output":"said \"error\": none"},"_meta":{"threadId":"t-1","progressToken":3}}}"#;
    let plain = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"advance","arguments":{"run_id":"r"},"_meta":{"threadId":"t-1"}}}"#;
    let short = tool_call(plain).expect("a plain tool call takes the short parse");
    let rmcp_reads = serde_json::from_str::<ClientJsonRpcMessage>(plain).unwrap();
    assert_eq!(serde_json::to_value(&short).unwrap(), serde_json::to_value(&rmcp_reads).unwrap(), "the same message as rmcp's decode");
    let JsonRpcMessage::Request(request) = &short else { panic!("{short:?}") };
    let ClientRequest::CallToolRequest(call) = &request.request else { panic!("{short:?}") };
    assert_eq!(call.params.name, "advance");
    let meta = call.extensions.get::<rmcp::model::RequestMetaObject>().map(|m| serde_json::to_value(&m.0).unwrap());
    assert_eq!(meta.as_ref().map(|m| &m["threadId"]), Some(&json!("t-1")), "_meta is kept");
    // Quoted inside a string, `"error"` is no field: the short parse still takes it.
    let quoted = tool_call(line).expect("an escaped quote is no field name");
    assert_eq!(
        serde_json::to_value(&quoted).unwrap(),
        serde_json::to_value(serde_json::from_str::<ClientJsonRpcMessage>(line).unwrap()).unwrap()
    );
    // A line that may name the field is left to rmcp's decode.
    assert!(tool_call(r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"x","arguments":{"outcome":"error"}}}"#).is_none());
    // Stray fields and other methods are rmcp's to judge.
    assert!(tool_call(r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"x"},"result":{}}"#).is_none());
    assert!(tool_call(r#"{"jsonrpc":"2.0","id":8,"method":"tools/list"}"#).is_none());
    assert!(tool_call(r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}"#).is_none(), "a notification is not a call");
}

#[tokio::test]
async fn a_tool_call_with_a_stray_result_is_still_refused() {
    let mut input = INIT.as_bytes().to_vec();
    input.extend_from_slice(b"\n");
    input.extend_from_slice(br#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"advance"},"result":{}}"#);
    input.extend_from_slice(b"\n");
    input.extend_from_slice(br#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"advance","arguments":{}}}"#);
    let (delivered, answers) = run(input).await;
    assert_eq!(answers.len(), 1, "{answers:#?}");
    assert_eq!((answers[0]["id"].clone(), answers[0]["error"]["code"].as_i64()), (json!(4), Some(-32600)));
    assert_eq!(delivered.len(), 2, "initialize and the good call: {delivered:#?}");
    assert!(matches!(&delivered[1], JsonRpcMessage::Request(r) if r.id == NumberOrString::Number(5)));
}

/// A tool result sent as baton's are (its answer only as text) arrives as rmcp would have
/// encoded it with the answer also as structured content; other results are left alone.
#[test]
fn a_tool_results_text_becomes_its_structured_content_in_the_line() {
    use rmcp::model::{CallToolResult, ContentBlock, JsonRpcResponse, RequestId, ServerResult};
    let answer = json!({"run_id": "r-1", "version": 3, "note": "quotes \" and \"result\":{ inside", "nested": {"a": [1, 2]}});
    let message = |result: CallToolResult, id: RequestId| -> TxJsonRpcMessage<RoleServer> {
        JsonRpcMessage::Response(JsonRpcResponse { jsonrpc: Default::default(), id, result: ServerResult::CallToolResult(result) })
    };
    for (result, id) in [
        (CallToolResult::success(vec![ContentBlock::text(answer.to_string())]), RequestId::Number(7)),
        (CallToolResult::error(vec![ContentBlock::text(answer.to_string())]), RequestId::String("x\",\"result\":{".into())),
    ] {
        let mut full = result.clone();
        full.structured_content = Some(answer.clone());
        let line = encode(&message(result, id.clone())).unwrap();
        let got: Value = serde_json::from_slice(&line).unwrap();
        let want = serde_json::to_value(message(full, id)).unwrap();
        assert_eq!(got, want);
        assert_eq!(got["result"]["structuredContent"], answer);
    }
    // Text that is no JSON object is only text.
    let plain = message(CallToolResult::success(vec![ContentBlock::text("[1, 2]")]), RequestId::Number(8));
    let got: Value = serde_json::from_slice(&encode(&plain).unwrap()).unwrap();
    assert_eq!(got, serde_json::to_value(&plain).unwrap());
    assert!(got["result"].get("structuredContent").is_none());
}
