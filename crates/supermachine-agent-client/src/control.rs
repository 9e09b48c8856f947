//! One CONTROL call on one stream, and reading its ack.

use crate::error::{Error, Result};
use crate::proto::{self, b64, Ack, ControlRequest, FrameType};
use std::io::{Read, Write};

/// Sends raw CONTROL JSON and returns the ack as a JSON object, whatever its `ok`.
pub fn control_raw<S: Read + Write>(stream: &mut S, json: &[u8]) -> Result<Ack> {
    proto::write_frame(stream, FrameType::Control, json)?;
    let f = proto::read_frame(stream)?
        .ok_or_else(|| Error::Protocol("connection closed before the CONTROL reply".into()))?;
    match f.kind {
        FrameType::Control => {
            serde_json::from_slice(&f.payload).map_err(|e| Error::Protocol(format!("bad CONTROL reply: {e}")))
        }
        FrameType::Error => Err(Error::Agent(String::from_utf8_lossy(&f.payload).into_owned())),
        k => Err(Error::Protocol(format!("expected a CONTROL reply, got {k}"))),
    }
}

/// Runs one control call; `{"ok":false}` becomes [`Error::Agent`].
pub fn control_on<S: Read + Write>(stream: &mut S, req: &ControlRequest) -> Result<Ack> {
    let ack = control_raw(stream, &req.to_json())?;
    if ack.get("ok").and_then(|v| v.as_bool()) == Some(true) {
        Ok(ack)
    } else {
        Err(Error::Agent(
            ack.get("error").and_then(|v| v.as_str()).unwrap_or("request failed (no message)").to_string(),
        ))
    }
}

pub(crate) fn field<T: serde::de::DeserializeOwned>(ack: Ack) -> Result<T> {
    serde_json::from_value(serde_json::Value::Object(ack)).map_err(|e| Error::Protocol(format!("bad reply: {e}")))
}

pub(crate) fn get_b64(ack: &Ack) -> Result<Vec<u8>> {
    let s =
        ack.get("data_b64").and_then(|v| v.as_str()).ok_or_else(|| Error::Protocol("reply has no data_b64".into()))?;
    b64::decode(s).map_err(Error::Protocol)
}
