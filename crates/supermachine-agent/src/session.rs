//! One connection: read the first frame — streaming its file data out (`jsonscan`) — and
//! dispatch to an exec or a control call.

use crate::conn::Conn;
use crate::file_write::ControlData;
use crate::input::{Input, Wait};
use crate::jsonscan::{self, Mode, ScanError};
use crate::limits::{FIRST_FRAME_TIMEOUT, INPUT_BUF};
use crate::stage::StageData;
use std::io;
use std::sync::Arc;
use std::time::Instant;
use supermachine_agent_proto::{self as proto, FrameError, FrameType};

/// Answers a first frame that could not be read.
fn frame_error(e: &FrameError) -> String {
    match e {
        FrameError::Io(e) if e.kind() == io::ErrorKind::TimedOut => format!(
            "timed out: the first frame must arrive within {} s, without pauses longer than that; closing the connection",
            FIRST_FRAME_TIMEOUT.as_secs()
        ),
        e => e.to_string(),
    }
}

/// Serves one connection to completion.
pub fn serve(conn: Arc<Conn>) {
    crate::upload::sweep_idle();
    let mut input = Input::new(conn.clone(), INPUT_BUF);
    input.set_wait(Wait::Until(Instant::now() + FIRST_FRAME_TIMEOUT));
    let header = match proto::read_header(&mut input) {
        Ok(None) => return,
        Ok(Some(h)) => h,
        Err(e) => return conn.send_error(&frame_error(&e)),
    };
    let kind = match header.kind() {
        Ok(k @ (FrameType::Request | FrameType::Control)) => k,
        Ok(other) => return conn.send_error(&format!("the first frame must be REQUEST or CONTROL, got {other}")),
        Err(e) => return conn.send_error(&e.to_string()),
    };
    input.set_wait(Wait::Idle(FIRST_FRAME_TIMEOUT));
    if kind == FrameType::Request {
        exec(conn, input, header.len as usize);
    } else {
        control(conn, input, header.len as usize);
    }
}

fn exec(conn: Arc<Conn>, mut input: Input, len: usize) {
    let mut stage = StageData::default();
    let rest = match jsonscan::scan(&mut input, len, Mode::Request, &mut stage) {
        Ok(r) => r,
        Err(ScanError::Frame(e)) => return conn.send_error(&frame_error(&e)),
        Err(e) => return conn.send_error(&format!("REQUEST: {e}")),
    };
    input.set_wait(Wait::Forever);
    let req = match proto::parse_exec_request(&rest.json) {
        Ok(r) => r,
        Err(e) => return conn.send_error(&format!("REQUEST: {e}")),
    };
    // The JSON goes; its lease stays for the parsed request, which lives as long as the exec.
    let lease = rest.lease;
    crate::exec::run(conn.clone(), input, req, stage);
    drop(lease);
    conn.linger();
}

fn control(conn: Arc<Conn>, mut input: Input, len: usize) {
    let mut data = ControlData::default();
    let scanned = jsonscan::scan(&mut input, len, Mode::Control, &mut data);
    input.set_wait(Wait::Forever);
    let req = match scanned {
        Err(ScanError::Frame(e)) => return conn.send_error(&frame_error(&e)),
        Err(e) => Err(e.to_string()),
        Ok(rest) => proto::parse_control_request(&rest.json).map_err(|e| e.to_string()),
    };
    match req {
        Ok(proto::ControlRequest::PortForward { port }) => crate::control::port_forward(conn, input, port),
        Ok(req) => {
            crate::control::serve(&conn, &req, data);
            conn.linger();
        }
        Err(msg) => {
            let _ = conn.send(FrameType::Control, &proto::ack_err(&msg));
            conn.linger();
        }
    }
}
