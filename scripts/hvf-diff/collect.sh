#!/bin/sh
# Run through the agent by scripts/hvf-diff.sh: one `key<TAB>value` line per fact of the guest's
# state a workload or the host can observe. Values are made comparable (newlines as `|`).
one() { printf '%s\t%s\n' "$1" "$(printf '%s' "$2" | tr '\n\t' '| ')"; }
for m in / /tmp /run /dev /dev/shm /dev/pts /proc /sys /sys/fs/cgroup; do
    one "mount.$m" "$(awk -v m="$m" '$2 == m {t = $3; o = $4} END {print t, o}' /proc/mounts |
        sed -e 's/,relatime//' -e 's/,size=[0-9]*k//' -e 's/,nr_inodes=[0-9]*//' -e 's/,inode64//')"
done
one mount.shm_size_kib "$(df -k /dev/shm | awk 'NR == 2 {print $2}')"
for p in / /tmp /run /dev/shm /tmp/.X11-unix /run/dbus /sys/fs/cgroup; do
    one "mode.$p" "$(stat -c '%a %u:%g' "$p" 2>&1)"
done
for f in /etc/resolv.conf /etc/hosts /etc/gai.conf; do one "file.$f" "$(cat "$f" 2>&1)"; done
for l in /dev/fd /dev/stdin /dev/stdout /dev/stderr /dev/ptmx; do one "dev.$l" "$(readlink "$l" 2>&1)"; done
one exec.env "$(env | grep -v -e '^PWD=' -e '^SHLVL=' -e '^_=' | sort)"
one exec.id "$(id)"
one hostname "$(hostname)"
one net.smnet0 "$(ip -4 -o addr show smnet0 2>&1 | awk '{print $3, $4, $5, $6}')"
one net.lo "$(ip -4 -o addr show lo | awk '{print $4}')"
one sysctl.ip_unprivileged_port_start "$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start)"
one smpark.device "$(test -c /dev/smpark && echo present || echo absent)"
one smpark.state_gpa "$(test -r /sys/kernel/smpark/state_gpa && echo present || echo absent)"
one nobody.tmp "$(su nobody -s /bin/sh -c 'touch /tmp/hvf-diff-nobody' 2>&1 && echo writable)"
one workload.pidfile "$(test -s /run/supermachine-workload.pid && echo present || echo absent)"
one pid1.argv "$(tr '\0' ' ' </proc/1/cmdline)"
# User-space processes (kernel threads have an empty cmdline), without this script's own.
one processes "$(for p in /proc/[0-9]*; do [ -s "$p/cmdline" ] && cat "$p/comm"; done 2>/dev/null |
    grep -v -x -e sh -e cat -e sort -e collect.sh | sort -u)"
cat /run/wl-state 2>/dev/null || one wl.state absent
