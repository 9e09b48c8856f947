//! The payload set of one guest architecture, taken from the arch crate's constants.

use crate::qemu::Machine;

/// Everything a guest of one architecture is built from.
#[derive(Debug, Clone, Copy)]
pub struct GuestPayloads {
    /// `"x86_64"` or `"aarch64"`.
    pub arch: &'static str,
    /// Kernel image (bzImage / arm64 Image).
    pub kernel: &'static [u8],
    /// Static busybox.
    pub busybox: &'static [u8],
    /// The agent.
    pub agent: &'static [u8],
    /// init-oci.
    pub init_oci: &'static [u8],
    /// The QEMU machine these boot on under TCG.
    pub machine: Machine,
    /// QEMU binary that runs them.
    pub qemu: &'static str,
}

/// The x86_64 crate's payloads (QEMU microvm with ACPI, so power-off ends QEMU).
pub fn x86_64() -> GuestPayloads {
    use supermachine_kernel_x86_64 as p;
    GuestPayloads {
        arch: "x86_64",
        kernel: p::KERNEL_BYTES,
        busybox: p::BUSYBOX_BYTES,
        agent: p::SUPERMACHINE_AGENT_BYTES,
        init_oci: p::INIT_OCI_BYTES,
        machine: Machine::Microvm { acpi: true },
        qemu: "qemu-system-x86_64",
    }
}

/// The payloads of `arch` (`"x86_64"` or `"aarch64"`), or None for any other name.
pub fn for_arch(arch: &str) -> Option<GuestPayloads> {
    match arch {
        "x86_64" => Some(x86_64()),
        "aarch64" => Some(aarch64()),
        _ => None,
    }
}

impl GuestPayloads {
    /// The same payloads with the kernel read from `path` (a kernel you built, or the published
    /// one). The bytes live as long as the process, like the crates' own.
    pub fn with_kernel_file(self, path: &std::path::Path) -> std::io::Result<GuestPayloads> {
        let bytes =
            std::fs::read(path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(GuestPayloads { kernel: Box::leak(bytes.into_boxed_slice()), ..self })
    }
}

/// The aarch64 crate's payloads (QEMU virt, cortex-a72).
pub fn aarch64() -> GuestPayloads {
    use supermachine_kernel_aarch64 as p;
    GuestPayloads {
        arch: "aarch64",
        kernel: p::KERNEL_BYTES,
        busybox: p::BUSYBOX_BYTES,
        agent: p::SUPERMACHINE_AGENT_BYTES,
        init_oci: p::INIT_OCI_BYTES,
        machine: Machine::Virt,
        qemu: "qemu-system-aarch64",
    }
}
