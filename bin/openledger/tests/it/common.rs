//! Test harness: raw JSON-RPC requests to a node binary.

use serde_json::{Value, json};

/// POSTs a body; returns (status, JSON response or Null).
pub async fn raw_post(url: &str, body: String) -> (u16, Value) {
    let client = reqwest::Client::new();
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("post");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `{"jsonrpc":"2.0","id":1,"method":m,"params":p}`.
pub fn req(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
}
