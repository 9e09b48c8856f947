# shellcheck shell=sh
# The image conformance checks, run in the guest by the `workload` harness binary
# (scripts/image-test.sh stages this script, the walker and the manifests after each boot):
#
#   sh checks.sh run NAME
#
# NAME:
#   conform  /t as the guest kernel reads it equals the image's own content (the manifest of
#            what unsquashfs extracts from the same image): any difference is the kernel's
#   source   /t equals the source tree the image was baked from (differences the kernel does
#            not cause, e.g. what the image writer dropped, show here and in the host report)
#   volume   the runtime's data-volume ext4 (supermachine::ext4::make_empty_ext4, in the image
#            at /opt/sm-image/volume.ext4) mounted read-write through a loop device, /t copied
#            in with busybox cp -a, remounted, and read back equal to /t (xattrs left out:
#            busybox cp does not copy them, nor the times of symbolic links)
# Exit status 0 means the check passed.
set -u
D=/opt/sm-image
BB=/bin/busybox

volume() {
    set -e
    $BB mkdir -p /run/sm-vol/mnt
    $BB cp $D/volume.ext4 /run/sm-vol/volume.ext4
    dev=$($BB losetup -f)
    $BB losetup "$dev" /run/sm-vol/volume.ext4
    trap '$BB umount /run/sm-vol/mnt 2>/dev/null; $BB losetup -d "$dev"' EXIT
    $BB mount -t ext4 "$dev" /run/sm-vol/mnt
    $BB cp -a /t /run/sm-vol/mnt/t
    $BB umount /run/sm-vol/mnt
    $BB mount -t ext4 -o ro "$dev" /run/sm-vol/mnt
    $D/walk /t >/run/sm-vol/t.txt
    set +e
    $D/walk --compare /run/sm-vol/t.txt --ignore xattrs,mtime:l /run/sm-vol/mnt/t
}

case ${1:-}/${2:-} in
    run/conform) exec $D/walk --compare $D/writer.txt /t ;;
    run/source) exec $D/walk --compare $D/source.txt /t ;;
    run/volume) volume ;;
    *) echo "usage: sh checks.sh run conform|source|volume" >&2; exit 2 ;;
esac
