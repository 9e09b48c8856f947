// Decodes payload/*.xz into OUT_DIR (checked against payload/manifest.toml, or taken from a
// SUPERMACHINE_*_PATH override) and generates the constants src/lib.rs includes.
fn main() {
    supermachine_kernel_build::build::main(supermachine_kernel_build::build::Arch::Aarch64);
}
