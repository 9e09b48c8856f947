#!/bin/sh
# Workload checks, run INSIDE the guest (copied to /opt/sm-workload/checks.sh by
# scripts/workload-test.sh) through the agent, one exec per check:
#
#   sh checks.sh list quick|full     names of the checks of a tier (also works on the host)
#   sh checks.sh run NAME            run one check; exit 0 = pass; bounded by $SM_CHECK_TIMEOUT
#
# Each check drives software nobody here wrote (util-linux, iproute2, nftables, iptables,
# bpftool, qemu-user-static, python3, dockerd, CPython's regression tests) against the kernel.
# The root is the Debian image built by scripts/workload-test.sh; /opt/sm-workload/foreign/busybox
# is a static busybox of the other architecture (for the binfmt_misc check).
set -eu
SM=/opt/sm-workload

QUICK="kallsyms binfmt_misc bpf nftables iptables_nft iptables_legacy bridge_veth loop_ext4 \
hugetlbfs fanotify dnotify cgroup_v2_limits unshare_all keys"
# CPython regression tests of the kernel-facing modules (one check each).
CPYTHON="test_os test_posix test_socket test_select test_selectors test_signal test_subprocess \
test_mmap test_fcntl test_pty test_ioctl test_resource test_time test_threading test_io \
test_tempfile test_shutil test_fileio test_file test_epoll test_poll test_socketserver test_pwd \
test_grp test_unicode_file_functions test_fork1 test_wait3 test_wait4 test_threadsignals test_thread test_sched \
test_stat test_pathlib test_glob test_genericpath test_posixpath test_largefile test_eintr \
test_faulthandler test_concurrent_futures test_multiprocessing_fork test_asyncio \
test_zipfile test_pkgutil"
FULL="$QUICK vxlan wireguard policy_routing tc_clsact macvlan_dummy loop_vfat erofs iso9660 thp \
coredump psi autofs io_uring ia32 docker $(for m in $CPYTHON; do printf 'cpython_%s ' "$m"; done)"

arch_foreign() { case $(uname -m) in x86_64) echo aarch64 ;; aarch64) echo x86_64 ;; esac; }
fail() { echo "FAIL: $*" >&2; exit 1; }
has_fs() { grep -qw "$1" /proc/filesystems || fail "$1 is not in /proc/filesystems"; }
cgroot() {
    # dockerd, systemd and kubelet expect cgroup v2 at /sys/fs/cgroup.
    if ! grep -q ' /sys/fs/cgroup cgroup2 ' /proc/mounts; then
        mkdir -p /sys/fs/cgroup
        mount -t cgroup2 cgroup2 /sys/fs/cgroup
    fi
}

check_kallsyms() {
    n=$(grep -c ' [Tt] ' /proc/kallsyms || true)
    echo "$n text symbols"
    [ "$n" -gt 1000 ] || fail "no symbol names in /proc/kallsyms"
    grep -q ' T start_kernel$' /proc/kallsyms || fail "start_kernel not in /proc/kallsyms"
}

check_binfmt_misc() {
    f=$(arch_foreign)
    [ -d /proc/sys/fs/binfmt_misc ] || fail "no /proc/sys/fs/binfmt_misc"
    mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    conf=/usr/lib/binfmt.d/qemu-$f.conf
    [ -f "$conf" ] || fail "$conf missing (qemu-user-static)"
    # systemd-binfmt format; register with the F flag (interpreter opened now, as Rosetta does).
    line=$(grep -v '^#' "$conf" | head -n1)
    flags=${line##*:}
    case $flags in *F*) ;; *) line="${line}F" ;; esac
    [ -e "/proc/sys/fs/binfmt_misc/qemu-$f" ] || printf '%s' "$line" >/proc/sys/fs/binfmt_misc/register
    grep -q '^flags: .*F' "/proc/sys/fs/binfmt_misc/qemu-$f" || fail "F flag not registered"
    out=$($SM/foreign/busybox uname -m)
    echo "foreign busybox says: $out"
    [ "$out" = "$f" ] || fail "expected $f"
}

check_bpf() {
    out=$(bpftool feature probe kernel 2>&1 || true)
    echo "$out" | grep -E 'bpf\(\) syscall|cgroup_device|JIT' | head -n 8
    echo "$out" | grep -q 'bpf() syscall is available' || fail "bpf() syscall not available"
    echo "$out" | grep -q 'program_type cgroup_device is available' || fail "no cgroup_device programs (CGROUP_BPF)"
    echo "$out" | grep -q 'program_type sched_cls is available' || fail "no tc classifier programs"
}

check_nftables() {
    nft add table inet smt
    nft add chain inet smt post '{ type nat hook postrouting priority 100; }'
    nft add rule inet smt post ip saddr 10.99.0.0/16 masquerade
    nft add chain inet smt forwarding '{ type filter hook forward priority 0; }'
    nft add rule inet smt forwarding ct state established,related accept
    nft list table inet smt
    nft delete table inet smt
}

iptables_rules() { # the rules dockerd installs, in its own words
    $1 -t nat -N SMT
    $1 -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j SMT
    $1 -t nat -A POSTROUTING -s 10.99.0.0/16 ! -o br-smt -j MASQUERADE
    $1 -t nat -A SMT -p tcp --dport 8080 -j DNAT --to-destination 10.99.0.2:80
    $1 -A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
    $1 -A FORWARD -p tcp -m state --state NEW -m multiport --dports 80,443 -m comment --comment smt -j ACCEPT
    $1 -t mangle -A OUTPUT -j MARK --set-mark 7
    $1 -A INPUT -p tcp --dport 9 -j REJECT
    $1 -t nat -S; $1 -S
    $1 -t nat -F; $1 -t nat -X SMT; $1 -F; $1 -t mangle -F
}
check_iptables_nft() { iptables_rules iptables-nft; }
check_iptables_legacy() { iptables_rules iptables-legacy; }

check_bridge_veth() {
    ip link add br-smt type bridge
    ip link add v-smt0 type veth peer name v-smt1
    ip link set v-smt0 master br-smt
    ip link set br-smt up; ip link set v-smt0 up; ip link set v-smt1 up
    [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || fail "no bridge netfilter (br_netfilter)"
    ip -d link show br-smt
    ip link del v-smt0; ip link del br-smt
}

check_vxlan() { ip link add vx-smt type vxlan id 42 dstport 4789 local 127.0.0.1; ip -d link show vx-smt; ip link del vx-smt; }
check_wireguard() { ip link add wg-smt type wireguard; ip -d link show wg-smt; ip link del wg-smt; }
check_macvlan_dummy() {
    ip link add d-smt type dummy; ip link add mv-smt link d-smt type macvlan mode bridge
    ip link add link d-smt name d-smt.7 type vlan id 7
    ip -br link; ip link del mv-smt; ip link del d-smt.7; ip link del d-smt
}
check_policy_routing() {
    ip rule add fwmark 7 table 107; ip route add local 10.98.0.0/16 dev lo table 107
    ip rule show | grep -q 'lookup 107' || fail "rule not installed"
    ip rule del fwmark 7 table 107; ip route flush table 107
}
check_tc_clsact() { tc qdisc add dev lo clsact; tc qdisc show dev lo; tc qdisc del dev lo clsact; tc qdisc add dev lo root htb; tc qdisc del dev lo root; }

check_loop_ext4() {
    d=$(mktemp -d); truncate -s 32M "$d/img"; mkfs.ext4 -q -F "$d/img"
    mkdir "$d/mnt"; mount -o loop "$d/img" "$d/mnt"
    echo hello >"$d/mnt/f"; sync; losetup -a
    umount "$d/mnt"; mount -o loop,ro "$d/img" "$d/mnt"; grep -q hello "$d/mnt/f"; umount "$d/mnt"
    rm -rf "$d"
}
check_loop_vfat() {
    d=$(mktemp -d); truncate -s 16M "$d/img"; mkfs.vfat "$d/img" >/dev/null
    mkdir "$d/mnt"; mount -o loop "$d/img" "$d/mnt"; echo hi >"$d/mnt/F.TXT"; umount "$d/mnt"; rm -rf "$d"
}
check_erofs() {
    d=$(mktemp -d); mkdir "$d/src" "$d/mnt"; echo layer >"$d/src/f"
    mkfs.erofs --quiet "$d/img" "$d/src"; mount -o loop,ro "$d/img" "$d/mnt"; grep -q layer "$d/mnt/f"
    umount "$d/mnt"; rm -rf "$d"
}
check_iso9660() { has_fs iso9660; }
check_autofs() { has_fs autofs; [ -c /dev/autofs ] || fail "no /dev/autofs"; }

check_hugetlbfs() {
    echo 8 >/proc/sys/vm/nr_hugepages
    grep -E 'HugePages_Total|Hugepagesize' /proc/meminfo
    [ "$(awk '/HugePages_Total/ {print $2}' /proc/meminfo)" -gt 0 ] || fail "no huge pages reserved"
    mkdir -p /dev/hugepages; mountpoint -q /dev/hugepages || mount -t hugetlbfs none /dev/hugepages
    python3 - <<'PY'
import mmap, os
size = 2 << 20
fd = os.open("/dev/hugepages/smt", os.O_CREAT | os.O_RDWR, 0o600)
os.ftruncate(fd, size)
m = mmap.mmap(fd, size)                                # a file on hugetlbfs
m[0:5] = b"hello"; assert m[0:5] == b"hello"; m.close(); os.close(fd); os.unlink("/dev/hugepages/smt")
MAP_HUGETLB = 0x40000
a = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_HUGETLB)
a[size - 1] = 7; assert a[size - 1] == 7
print("hugetlbfs file and MAP_HUGETLB mappings work")
PY
    echo 0 >/proc/sys/vm/nr_hugepages
}
check_thp() {
    cat /sys/kernel/mm/transparent_hugepage/enabled
    python3 -c 'import mmap; m = mmap.mmap(-1, 8 << 20); m.madvise(mmap.MADV_HUGEPAGE); m[0] = 1; print("madvise(MADV_HUGEPAGE) ok")'
}

check_fanotify() {
    python3 - <<'PY'
import ctypes, os, struct, tempfile
libc = ctypes.CDLL(None, use_errno=True)
FAN_CLASS_NOTIF, FAN_MARK_ADD, FAN_CLOSE_WRITE, FAN_EVENT_ON_CHILD = 0, 1, 0x8, 0x08000000
fd = libc.fanotify_init(FAN_CLASS_NOTIF, os.O_RDONLY)
if fd < 0:
    raise SystemExit("fanotify_init: " + os.strerror(ctypes.get_errno()))
d = tempfile.mkdtemp()
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
if libc.fanotify_mark(fd, FAN_MARK_ADD, FAN_CLOSE_WRITE | FAN_EVENT_ON_CHILD, -100, d.encode()) < 0:
    raise SystemExit("fanotify_mark: " + os.strerror(ctypes.get_errno()))
with open(os.path.join(d, "f"), "w") as f:
    f.write("x")
ev = os.read(fd, 4096)
mask = struct.unpack_from("Q", ev, 8)[0]  # struct fanotify_event_metadata: len, vers, ..., mask
assert mask & FAN_CLOSE_WRITE, mask
print("fanotify event mask", hex(mask))
PY
}
check_dnotify() {
    python3 - <<'PY'
import fcntl, os, signal, tempfile, time
got = []
signal.signal(signal.SIGIO, lambda s, f: got.append(s))
d = tempfile.mkdtemp()
fd = os.open(d, os.O_RDONLY)
fcntl.fcntl(fd, fcntl.F_NOTIFY, fcntl.DN_CREATE | fcntl.DN_MULTISHOT)
open(os.path.join(d, "f"), "w").close()
time.sleep(0.2)
assert got, "no SIGIO from F_NOTIFY"
print("dnotify delivered", len(got), "signal(s)")
PY
}

check_cgroup_v2_limits() {
    cgroot
    cat /sys/fs/cgroup/cgroup.controllers
    for c in cpu memory pids io; do
        grep -qw $c /sys/fs/cgroup/cgroup.controllers || fail "controller $c missing"
    done
    echo '+cpu +memory +pids +io' >/sys/fs/cgroup/cgroup.subtree_control
    g=/sys/fs/cgroup/smt; mkdir -p $g
    echo 33554432 >$g/memory.max; echo 6 >$g/pids.max; echo '50000 100000' >$g/cpu.max
    echo "$(cat /sys/block/vda/dev) rbps=1048576" >$g/io.max
    grep -q rbps=1048576 $g/io.max || fail "io.max not applied"
    # pids.max is enforced: a shell in the group cannot start 10 children.
    out=$(sh -c 'echo $$ >'$g'/cgroup.procs; n=0; for i in 1 2 3 4 5 6 7 8 9 10; do
            sleep 2 & n=$((n+1)); done 2>/dev/null; echo started=$n' 2>&1 || true)
    echo "$out"; grep -q 'pids.max' $g/pids.events 2>/dev/null || true
    [ "$(awk '/max/ {print $2}' $g/pids.events)" -gt 0 ] || fail "pids.max was not enforced ($out)"
    # memory.max is enforced: an allocation past it gets the process OOM-killed in the group.
    sh -c 'echo $$ >'$g'/cgroup.procs; exec python3 -c "b = bytearray(64 << 20)"' 2>/dev/null && fail "64 MiB allocated under memory.max=32M"
    [ "$(awk '/^oom_kill / {print $2}' $g/memory.events)" -gt 0 ] || fail "no oom_kill recorded"
    sleep 2; rmdir $g
}

check_unshare_all() {
    for ns in --mount --uts --ipc --net --pid --user --cgroup --time; do
        unshare $ns --fork true || fail "unshare $ns"
    done
    # shellcheck disable=SC2016 # expanded by the shell inside the new namespaces
    unshare --mount --uts --ipc --net --pid --user --cgroup --time --fork --map-root-user \
        sh -c 'hostname smt && [ "$(hostname)" = smt ] && id -u' 
}

check_keys() {
    # One session keyring for the whole check (each exec would otherwise get its own).
    # shellcheck disable=SC2016 # expanded by the shell inside the session keyring
    keyctl session - sh -c 'id=$(keyctl add user smtest hello @s) && keyctl print "$id" | grep -qx hello && keyctl show @s'
}

check_coredump() {
    d=$(mktemp -d); echo "$d/core.%p" >/proc/sys/kernel/core_pattern
    sh -c 'ulimit -c unlimited; kill -SEGV $$' || true
    ls -l "$d"; ls "$d"/core.* >/dev/null 2>&1 || fail "no core file written"
    rm -rf "$d"
}
check_psi() { for r in cpu memory io; do head -n1 /proc/pressure/$r; done; }
check_io_uring() {
    python3 - <<'PY'
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
fd = libc.syscall(425, 8, params)  # io_uring_setup
if fd < 0:
    raise SystemExit("io_uring_setup: " + os.strerror(ctypes.get_errno()))
print("io_uring fd", fd)
PY
}
check_ia32() {
    [ "$(uname -m)" = x86_64 ] || { echo "x86_64 only"; return 0; }
    [ -x $SM/busybox-i386 ] || fail "$SM/busybox-i386 missing"
    file=$(head -c 5 $SM/busybox-i386 | od -An -tx1 | tr -d ' \n')
    [ "$file" = 7f454c4601 ] || fail "not a 32-bit ELF: $file"
    $SM/busybox-i386 echo "32-bit busybox runs"
}

stop_docker() { # leave no daemons behind for the checks after this one
    pkill -x dockerd 2>/dev/null || true; sleep 2; pkill -x containerd 2>/dev/null || true
}
check_docker() {
    cgroot
    trap stop_docker EXIT
    mkdir -p /var/lib/docker; mountpoint -q /var/lib/docker || mount -t tmpfs -o size=512m tmpfs /var/lib/docker
    # containerd first, then dockerd on its socket: under TCG, dockerd's own start-up wait for
    # a child containerd can run out.
    containerd </dev/null >/tmp/containerd.log 2>&1 &
    i=0; until [ -S /run/containerd/containerd.sock ]; do
        i=$((i+1)); [ $i -lt 300 ] || { tail -n 20 /tmp/containerd.log; fail "containerd did not start"; }; sleep 1
    done
    dockerd --containerd /run/containerd/containerd.sock --storage-driver overlay2 </dev/null >/tmp/dockerd.log 2>&1 &
    dpid=$!
    i=0; until [ -S /var/run/docker.sock ] && docker version >/dev/null 2>&1; do
        kill -0 $dpid 2>/dev/null || { tail -n 30 /tmp/dockerd.log; fail "dockerd exited"; }
        i=$((i+1)); [ $i -lt 300 ] || { tail -n 30 /tmp/dockerd.log; fail "dockerd did not start"; }; sleep 1
    done
    docker info 2>/dev/null | grep -E 'Storage Driver|Cgroup Version|Kernel Version'
    tar -C $SM/image -c . | docker import - smt:latest
    docker run --rm smt:latest /bin/busybox echo hello-from-container | grep -q hello-from-container
    # bridge networking and a published port reachable from the guest
    docker run -d --name web -p 8080:80 smt:latest /bin/busybox httpd -f -p 80 -h /www
    ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' web)
    echo "container ip $ip"
    i=0; until python3 -c "import urllib.request as u; print(u.urlopen('http://$ip:80/').read().decode())"; do
        i=$((i+1)); [ $i -lt 20 ] || fail "container $ip:80 unreachable over the bridge"; sleep 1; done
    python3 -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/').read().decode())" \
        || fail "published port 8080 unreachable"
    docker rm -f web >/dev/null
    # --memory and --pids-limit are enforced
    docker run --rm --memory 32m --pids-limit 8 smt:latest /bin/busybox sh -c \
        'cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max' | tee /tmp/limits
    grep -qx 33554432 /tmp/limits || fail "limits not applied (memory)"
    grep -qx 8 /tmp/limits || fail "limits not applied (pids)"
    if docker run --rm --pids-limit 8 smt:latest /bin/busybox sh -c \
        'for i in 1 2 3 4 5 6 7 8 9 10 11 12; do /bin/busybox sleep 3 & done; wait' 2>/tmp/pids.err; then
        fail "12 processes started under --pids-limit 8"
    fi
    # tmpfs pages are charged to the container's memory cgroup and cannot be reclaimed without
    # swap: writing 64 MiB to /dev/shm under --memory 32m must get the writer OOM-killed.
    if docker run --rm --memory 32m --memory-swap 32m --shm-size 128m smt:latest \
        /bin/busybox dd if=/dev/zero of=/dev/shm/fill bs=1M count=64; then
        fail "64 MiB held under --memory 32m"
    fi
    echo "docker: run, bridge, published port, memory and pids limits all work"
}

cpython() {
    # One module per exec; regrtest's own --timeout would stop the whole run at the first hang.
    # VSOCK loopback tests connect to the guest's own CID: no loopback transport on purpose.
    cd /tmp && python3 -m test -q "$1" -i '*VSOCK*' -i '*vsock*'
}

case ${1:-} in
    list)
        # Unquoted on purpose: the tiers are blank-separated lists, printed one line each.
        # shellcheck disable=SC2086
        case ${2:-quick} in quick) echo $QUICK ;; full) echo $FULL ;; cpython) echo $CPYTHON ;;
                            *) fail "tiers: quick, full, cpython" ;; esac ;;
    run)
        name=${2:?check name}
        if [ "${SM_INNER:-}" = 1 ]; then
            case $name in
                cpython_*) cpython "${name#cpython_}" ;;
                *) "check_$name" ;;
            esac
        else
            SM_INNER=1 exec timeout -k 10 "${SM_CHECK_TIMEOUT:-600}" sh "$0" run "$name"
        fi ;;
    *) echo "usage: $0 list quick|full | run NAME" >&2; exit 2 ;;
esac
