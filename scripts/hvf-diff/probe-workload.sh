#!/bin/sh
# The workload of scripts/hvf-diff.sh: records what it was started with (its stdio may be
# /dev/null, so into a file), then stays up.
{
    printf 'wl.argv\t%s\n' "$0 $*"
    printf 'wl.id\t%s\n' "$(id)"
    printf 'wl.cwd\t%s\n' "$(pwd)"
    printf 'wl.hostname\t%s\n' "$(hostname)"
    printf 'wl.env\t%s\n' "$(env | grep -v -e '^PWD=' -e '^SHLVL=' -e '^_=' | sort | tr '\n' '|')"
    printf 'wl.stdin\t%s\n' "$(readlink /proc/$$/fd/0)"
    read -r pid _ _ _ pgrp session _ </proc/$$/stat
    if [ "$pgrp" = "$pid" ]; then printf 'wl.pgrp\town\n'; else printf 'wl.pgrp\tother\n'; fi
    case $session in
        0) printf 'wl.session\t0\n' ;;
        "$pid") printf 'wl.session\town\n' ;;
        *) printf 'wl.session\tother\n' ;;
    esac
} >/run/wl-state 2>&1
exec sleep 3600
