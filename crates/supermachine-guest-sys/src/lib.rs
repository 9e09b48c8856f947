//! The PID-1 building blocks both guest programs need (the agent when it is PID 1, and
//! init-oci): the early mount table, loopback bring-up, fork+exec with an errno pipe, execvp-style
//! PATH lookup, vCPU pinning and parking, the standard streams and signal sets, and an orderly
//! poweroff. Only `libc`; every `unsafe` block wraps one call and says
//! why it is sound.

#[cfg(not(target_os = "linux"))]
compile_error!("supermachine-guest-sys is for Linux guests only");

pub mod cpu;
pub mod mounts;
pub mod net;
pub mod netlink;
pub mod path;
pub mod power;
pub mod spawn;
pub mod stdio;

use std::ffi::CString;
use std::io;

/// `-1` → the thread's errno as an error; anything else is passed through.
pub fn cvt<T: Copy + PartialOrd + Default>(r: T) -> io::Result<T> {
    if r < T::default() {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// [`cvt`], retrying while the call fails with EINTR.
pub fn cvt_intr<T: Copy + PartialOrd + Default>(mut f: impl FnMut() -> T) -> io::Result<T> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// The calling thread's errno.
pub fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `s` as a C string; a NUL byte inside is an `InvalidInput` error (never silently dropped).
pub fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string contains a NUL byte"))
}
