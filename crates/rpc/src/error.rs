//! JSON-RPC errors with the standard codes wallets and libraries expect.

use alloy_primitives::Bytes;
use openledger_chain::{ChainError, PoolError, StoreError};
use serde_json::{Value, json};

/// A JSON-RPC error object.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RpcError {
    /// Error code (-32700 parse, -32600 invalid request, -32601 method not found, -32602 invalid
    /// params, -32603 internal, -32000 server error, 3 execution reverted).
    pub code: i64,
    /// Message.
    pub message: String,
    /// Optional data (revert bytes for code 3).
    pub data: Option<Value>,
}

impl RpcError {
    /// -32700.
    pub fn parse(msg: impl Into<String>) -> Self {
        Self {
            code: -32700,
            message: msg.into(),
            data: None,
        }
    }
    /// -32600.
    pub fn invalid_request(msg: impl Into<String>) -> Self {
        Self {
            code: -32600,
            message: msg.into(),
            data: None,
        }
    }
    /// -32601.
    pub fn method_not_found(method: &str) -> Self {
        Self {
            code: -32601,
            message: format!("the method {method} does not exist/is not available"),
            data: None,
        }
    }
    /// -32602.
    pub fn invalid_params(msg: impl Into<String>) -> Self {
        Self {
            code: -32602,
            message: msg.into(),
            data: None,
        }
    }
    /// -32603.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self {
            code: -32603,
            message: msg.into(),
            data: None,
        }
    }
    /// -32000, the generic server error geth uses for pool rejections and the like.
    pub fn server(msg: impl Into<String>) -> Self {
        Self {
            code: -32000,
            message: msg.into(),
            data: None,
        }
    }
    /// -32005, a limit was exceeded.
    pub fn limit(msg: impl Into<String>) -> Self {
        Self {
            code: -32005,
            message: msg.into(),
            data: None,
        }
    }
    /// -32003, geth's "response too large" for batch items past the response size limit.
    pub fn response_too_large() -> Self {
        Self {
            code: -32003,
            message: "response too large".into(),
            data: None,
        }
    }
    /// Code 3, execution reverted, with the revert data and decoded reason.
    pub fn reverted(output: &Bytes) -> Self {
        let message = match decode_revert_reason(output) {
            Some(reason) => format!("execution reverted: {reason}"),
            None => "execution reverted".to_string(),
        };
        Self {
            code: 3,
            message,
            data: Some(Value::String(output.to_string())),
        }
    }
    /// The JSON object.
    pub fn to_json(&self) -> Value {
        match &self.data {
            Some(d) => json!({"code": self.code, "message": self.message, "data": d}),
            None => json!({"code": self.code, "message": self.message}),
        }
    }
}

/// Decodes `Error(string)` and `Panic(uint256)` revert data.
pub fn decode_revert_reason(output: &[u8]) -> Option<String> {
    if output.len() < 4 {
        return None;
    }
    let (sel, rest) = output.split_at(4);
    if sel == [0x08, 0xc3, 0x79, 0xa0] {
        // abi.encode(string): offset, length, bytes
        if rest.len() < 64 {
            return None;
        }
        let len = alloy_primitives::U256::from_be_slice(&rest[32..64]);
        let len: usize = len.try_into().ok()?;
        let bytes = rest.get(64..64usize.checked_add(len)?)?;
        return Some(String::from_utf8_lossy(bytes).into_owned());
    }
    if sel == [0x4e, 0x48, 0x7b, 0x71] && rest.len() >= 32 {
        let code = alloy_primitives::U256::from_be_slice(&rest[..32]);
        // Any 256-bit value can come back from a contract: only the known codes have names.
        let what = match u64::try_from(code).unwrap_or(u64::MAX) {
            0x01 => "assertion failed",
            0x11 => "arithmetic underflow or overflow",
            0x12 => "division or modulo by zero",
            0x21 => "enum overflow",
            0x22 => "invalid encoded storage byte array accessed",
            0x31 => "out-of-bounds array access; popping on an empty array",
            0x32 => "out-of-bounds access of an array or bytesN",
            0x41 => "out of memory",
            0x51 => "uninitialized function",
            _ => "unknown panic code",
        };
        return Some(format!("panic: {what} (0x{:x})", code));
    }
    None
}

impl From<PoolError> for RpcError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Decode(_) => RpcError::invalid_params(e.to_string()),
            PoolError::Internal(_) => RpcError::internal(e.to_string()),
            _ => RpcError::server(e.to_string()),
        }
    }
}

impl From<StoreError> for RpcError {
    fn from(e: StoreError) -> Self {
        RpcError::internal(e.to_string())
    }
}

impl From<ChainError> for RpcError {
    fn from(e: ChainError) -> Self {
        match e {
            ChainError::NotFound(m) => RpcError::server(m),
            ChainError::Execution(m) => RpcError::server(m),
            ChainError::InvalidArgument(m) => RpcError::invalid_params(m),
            ChainError::Timeout => RpcError::server("execution aborted (timeout)"),
            other => RpcError::internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_error_string_and_panic() {
        let data = alloy_primitives::hex::decode(
            "08c379a0000000000000000000000000000000000000000000000000000000000000002000000000000000000000000000000000000000000000000000000000000000046e6f706500000000000000000000000000000000000000000000000000000000",
        )
        .expect("hex");
        assert_eq!(decode_revert_reason(&data).as_deref(), Some("nope"));
        let mut panic = vec![0x4e, 0x48, 0x7b, 0x71];
        panic.extend_from_slice(&[0u8; 31]);
        panic.push(0x11);
        assert!(
            decode_revert_reason(&panic)
                .expect("panic")
                .contains("overflow")
        );
        assert_eq!(decode_revert_reason(&[1, 2]), None);
        // Truncated string payload never panics.
        assert_eq!(decode_revert_reason(&data[..40]), None);
        // Codes beyond 64 bits are unknown codes, not a panic of the RPC.
        for code in [
            alloy_primitives::U256::from(1u64) << 64,
            alloy_primitives::U256::MAX,
        ] {
            let mut big = vec![0x4e, 0x48, 0x7b, 0x71];
            big.extend_from_slice(&code.to_be_bytes::<32>());
            assert_eq!(
                decode_revert_reason(&big),
                Some(format!("panic: unknown panic code ({code:#x})"))
            );
        }
    }
}
