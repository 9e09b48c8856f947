//! Shared helper of the `supermachine-kernel-*` payload crates.
//!
//! Two halves, so neither arch crate carries its own copy of the logic:
//!
//! * **Run time** (always built): the [`Asset`] record and atomic, concurrency-safe
//!   extraction ([`extract::write_atomic`], [`extract::extract_all_to`]) that the arch crates
//!   expose as `extract_*_to` functions.
//! * **Build time** (feature `build`, used from the arch crates' `build.rs`): reads the payload
//!   manifest, decodes each `*.xz` with `xz2` (no external tool), checks its SHA-256, applies
//!   `SUPERMACHINE_*_PATH` overrides after validating them, and generates the constants that
//!   the arch crate `include!`s. See `build::run`.
//!
//! Users normally depend on the `supermachine-kernel` facade instead of this crate.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(any(test, feature = "build"))]
pub mod build;
pub mod extract;
#[cfg(any(test, feature = "fixtures"))]
#[doc(hidden)]
pub mod fixtures;
#[cfg(any(test, feature = "build"))]
mod format;
#[cfg(any(test, feature = "build"))]
pub mod manifest;
#[cfg(test)]
mod payload_list_tests;
#[doc(hidden)]
pub mod testing;

pub use extract::{extract_all_to, write_atomic, Asset};
