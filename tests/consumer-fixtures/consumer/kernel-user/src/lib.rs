//! Uses the payloads through the `supermachine-kernel` facade, from a second crate: the
//! binary must still contain each payload once.
use std::hint::black_box;

/// The kernel as seen from this crate.
#[inline(never)]
pub fn kernel_bytes() -> &'static [u8] {
    black_box(supermachine_kernel::KERNEL_BYTES)
}

/// Busybox as seen from this crate.
#[inline(never)]
pub fn busybox_bytes() -> &'static [u8] {
    black_box(supermachine_kernel::BUSYBOX_BYTES)
}

/// Sum of every asset's length, read through the facade's table.
#[inline(never)]
pub fn assets_total_len() -> usize {
    black_box(supermachine_kernel::ASSETS).iter().map(|a| black_box(a.bytes).len()).sum()
}
