//! Initramfs images built the way the supermachine runtime builds them.
//!
//! [`supermachine`] produces the same layout and boot flow as the runtime's generated
//! initramfs (supermachine-compat.md §3): busybox, the agent and a generated `/init` that
//! mounts the squashfs image layers from `/dev/vd?`, overlays a tmpfs upper layer, moves
//! /proc /dev /sys into the new root and `switch_root`s into a launch script that execs the
//! agent as PID 1.

use crate::cpio::Archive;

/// Options for [`supermachine`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A shell command started in the background before the agent (the workload); its pid is
    /// written to `/run/supermachine-workload.pid`.
    pub workload: Option<String>,
    /// Extra arguments for the agent (e.g. `--port 1028`).
    pub agent_args: Vec<String>,
    /// A line `/init` prints before anything else (benchmarks time kernel → /init with it).
    pub marker: Option<String>,
}

/// The generated `/init`. Every step prints a `sm-init:` line on failure, never silently.
pub fn init_script(opts: &Options) -> String {
    let workload = match &opts.workload {
        Some(cmd) => {
            format!("/.supermachine/busybox sh -c {} &\necho $! > /run/supermachine-workload.pid\n", shell_quote(cmd))
        }
        None => String::new(),
    };
    let agent_args = opts.agent_args.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ");
    let marker = match &opts.marker {
        Some(m) => format!("/bin/busybox echo {}\n", shell_quote(m)),
        None => String::new(),
    };
    INIT_TEMPLATE.replace("@MARKER@", &marker).replace("@WORKLOAD@", &workload).replace("@AGENT_ARGS@", &agent_args)
}

const INIT_TEMPLATE: &str = r#"#!/bin/busybox sh
@MARKER@# Generated supermachine-style init: image layers -> overlay root -> agent as PID 1.
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs devtmpfs /dev
mount -t sysfs sysfs /sys
for tok in $(cat /proc/cmdline); do
    case $tok in
        supermachine.host_time=*) t=${tok#*=}; date -s "@$t" >/dev/null 2>&1 || date -u -D %s -s "$t" >/dev/null ;;
        sm.volume=*) volumes="$volumes ${tok#*=}" ;;
        sm.virtiofs=*) virtiofs="$virtiofs ${tok#*=}" ;;
    esac
done
echo 0 > /proc/sys/net/ipv4/ip_unprivileged_port_start
ip link set lo up
ip addr add 198.18.0.1/30 dev lo 2>/dev/null
mkdir -p /dev/shm /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
n=0; lower=
for dev in /dev/vd?; do
    [ -b "$dev" ] || continue
    mkdir -p /lower/$n
    if mount -t squashfs -o ro "$dev" /lower/$n 2>/dev/null; then
        lower="/lower/$n${lower:+:$lower}"; n=$((n + 1))
    else
        rmdir /lower/$n
    fi
done
if [ -z "$lower" ]; then
    echo "sm-init: no squashfs image layer on /dev/vd?; dropping to a shell"
    exec sh
fi
mkdir -p /ov /newroot
mount -t tmpfs tmpfs /ov
mkdir -p /ov/upper /ov/work
mount -t overlay overlay -o "lowerdir=$lower,upperdir=/ov/upper,workdir=/ov/work" /newroot || {
    echo "sm-init: overlay mount failed"; exec sh; }
mkdir -p /newroot/etc
printf 'nameserver 1.1.1.1\noptions timeout:2 attempts:2 no-aaaa single-request\n' > /newroot/etc/resolv.conf
grep -q localhost /newroot/etc/hosts 2>/dev/null || printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >> /newroot/etc/hosts
for v in $volumes; do
    dev=${v%%:*}; dir=${v#*:}
    if [ -b "$dev" ]; then
        mkdir -p "/newroot$dir" && mount -t ext4 "$dev" "/newroot$dir" || echo "sm-init: cannot mount $dev at $dir"
    else
        echo "sm-init: volume $dev not present; skipped"
    fi
done
for v in $virtiofs; do
    tag=${v%%:*}; dir=${v#*:}
    mkdir -p "/newroot$dir"
    mount -t virtiofs -o dax "$tag" "/newroot$dir" 2>/dev/null || mount -t virtiofs "$tag" "/newroot$dir" \
        || echo "sm-init: cannot mount virtiofs $tag at $dir"
done
mkdir -p /newroot/.supermachine /newroot/proc /newroot/dev /newroot/sys /newroot/run
cp /supermachine-agent /newroot/.supermachine/agent
cp /bin/busybox /newroot/.supermachine/busybox
chmod 0755 /newroot/.supermachine/agent /newroot/.supermachine/busybox
cat > /newroot/.supermachine/launch <<'LAUNCH'
#!/.supermachine/busybox sh
/.supermachine/busybox mkdir -p /run
@WORKLOAD@exec /.supermachine/agent @AGENT_ARGS@
LAUNCH
chmod 0755 /newroot/.supermachine/launch
mount --move /proc /newroot/proc
mount --move /dev /newroot/dev
mount --move /sys /newroot/sys
exec switch_root /newroot /.supermachine/launch
"#;

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Builds the supermachine-style initramfs (uncompressed newc, as the runtime does).
pub fn supermachine(busybox: &[u8], agent: &[u8], opts: &Options) -> Vec<u8> {
    let mut a = Archive::new();
    for d in ["bin", "proc", "dev", "sys", "modules"] {
        a.dir(d, 0o755);
    }
    a.file("bin/busybox", 0o755, busybox).file("supermachine-agent", 0o755, agent).file(
        "init",
        0o755,
        init_script(opts).as_bytes(),
    );
    a.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn workload_is_quoted_and_recorded() {
        let s = super::init_script(&super::Options { workload: Some("echo 'hi'".into()), ..Default::default() });
        assert!(s.contains(r#"sh -c 'echo '\''hi'\''' &"#), "{s}");
        assert!(s.contains("/run/supermachine-workload.pid"));
        assert!(s.contains("exec switch_root /newroot /.supermachine/launch"));
        assert!(s.starts_with("#!/bin/busybox sh\n# Generated"), "no marker line unless asked");
        let m = super::init_script(&super::Options { marker: Some("@@ t".into()), ..Default::default() });
        assert!(m.starts_with("#!/bin/busybox sh\n/bin/busybox echo '@@ t'\n"), "{m}");
    }
}
