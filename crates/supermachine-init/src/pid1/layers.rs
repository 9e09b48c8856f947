//! The image layers: which block devices hold them, and the overlay that stacks them under a
//! tmpfs upper layer at [`NEWROOT`].

use super::mounts::{is_block, mount_or};
use super::{wait_for, NEWROOT};
use supermachine_init::cmdline::Cmdline;
use supermachine_init::{Fatal, Status};

const LAYERS: &str = "/sm-layers";
const RW: &str = "/sm-rw";

fn has_squashfs_magic(dev: &str) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(dev).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"hsqs"
}

/// The image layers, bottom first: the `sm.rootfs=` devices, else every `/dev/vd?` holding a
/// squashfs that is not a volume.
pub fn find_layers(c: &Cmdline) -> Result<Vec<String>, Fatal> {
    if !c.rootfs.is_empty() {
        for d in &c.rootfs {
            if !wait_for(|| is_block(d)) {
                return Err(Fatal::new(
                    Status::NoRootfs,
                    format!("no image rootfs: {d} (from sm.rootfs=) is not a block device"),
                ));
            }
        }
        return Ok(c.rootfs.clone());
    }
    let scan = || -> Vec<String> {
        let mut devs: Vec<String> = std::fs::read_dir("/dev")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 3 && n.starts_with("vd") && n.as_bytes()[2].is_ascii_lowercase())
            .map(|n| format!("/dev/{n}"))
            .filter(|d| is_block(d) && !c.volumes.iter().any(|v| &v.device == d) && has_squashfs_magic(d))
            .collect();
        devs.sort();
        devs
    };
    let mut layers = Vec::new();
    wait_for(|| {
        layers = scan();
        !layers.is_empty()
    });
    if layers.is_empty() {
        return Err(Fatal::new(
            Status::NoRootfs,
            "no image rootfs: no /dev/vd? device holds a squashfs (name the layers with sm.rootfs=)",
        ));
    }
    Ok(layers)
}

/// Mounts each layer read-only (squashfs, else ext4, else erofs) and the overlay of them all
/// with a tmpfs upper layer on [`NEWROOT`].
pub fn mount_rootfs(layers: &[String]) -> Result<(), Fatal> {
    let mut dirs = Vec::new();
    for (i, dev) in layers.iter().enumerate() {
        let dir = format!("{LAYERS}/{i}");
        let ro = libc::MS_RDONLY;
        if has_squashfs_magic(dev) {
            mount_or(Status::RootfsMount, dev, &dir, "squashfs", ro, "")?;
        } else if mount_or(Status::RootfsMount, dev, &dir, "ext4", ro, "").is_err() {
            mount_or(Status::RootfsMount, dev, &dir, "erofs", ro, "").map_err(|_| {
                Fatal::new(Status::RootfsMount, format!("cannot mount {dev}: not a squashfs, ext4 or erofs image"))
            })?;
        }
        dirs.push(dir);
    }
    mount_or(Status::RootfsMount, "sm-rw", RW, "tmpfs", 0, "mode=0755")?;
    for d in ["upper", "work"] {
        std::fs::create_dir_all(format!("{RW}/{d}"))
            .map_err(|e| Fatal::new(Status::RootfsMount, format!("{RW}/{d}: {e}")))?;
    }
    dirs.reverse(); // overlay wants the top layer first
    let opts = format!("lowerdir={},upperdir={RW}/upper,workdir={RW}/work", dirs.join(":"));
    mount_or(Status::RootfsMount, "overlay", NEWROOT, "overlay", 0, &opts)
}
