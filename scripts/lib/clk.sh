# shellcheck shell=bash
# The boot profile's counter helper (scripts/boot-profile/clk.c): a tiny static program run as the
# first thing in /init that reads the raw guest counter into the kernel log, which anchors the
# printk clock. Shared by scripts/boot-profile.sh and scripts/bench.sh (the floor section).

# build_clk_helper ARCH OUT: compile the helper for ARCH (x86_64 or aarch64) to OUT.
# CC_X86_64 / CC_AARCH64 choose the compilers (gcc, aarch64-linux-gnu-gcc by default).
build_clk_helper() {
    local cc
    case $1 in
        x86_64) cc=${CC_X86_64:-gcc} ;;
        aarch64) cc=${CC_AARCH64:-aarch64-linux-gnu-gcc} ;;
        *) echo "build_clk_helper: unknown architecture '$1' (x86_64 or aarch64)" >&2; return 2 ;;
    esac
    command -v "$cc" >/dev/null || { echo "$cc is needed to build the counter helper (scripts/boot-profile/clk.c)" >&2; return 2; }
    "$cc" -static -nostdlib -ffreestanding -fno-stack-protector -fno-pie -no-pie -Os -s \
        -o "$2" "$ROOT/scripts/boot-profile/clk.c"
}
