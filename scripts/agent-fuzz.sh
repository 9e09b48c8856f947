#!/usr/bin/env bash
# Session-level fuzzer of the real agent binary (issue 11): the static x86_64 agent payload (or
# --agent PATH) as PID 1 of a fresh pid+mount+net namespace on a private tmpfs root, driven with
# valid and mutated sessions (every action, FIFOs/devices//proc paths, huge lengths, truncated
# frames, half-closes, disconnects, stalls, bursts over the cap, bad chunk offsets/tokens).
# Fails with a reproducer (seed + session index) on a crash, a hang, a wrong answer, a zombie or
# a thread/fd/RSS leak. Details: scripts/agent-fuzz.py --help, TESTING.md.
#
#   scripts/agent-fuzz.sh [--sessions N] [--seconds S] [--seed X] [--agent PATH] [--batch B]
#                         [--concurrency C] [--only I | --from I] [--kinds K,...] [-v]
#
# Default: 2,000 sessions, random seed (printed). One process, at nice 10. Needs root.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null; then
    if [ "${CI:-}" = true ]; then
        echo "error: agent-fuzz needs root and unshare (pid/mount/net namespaces)" >&2
        exit 1
    fi
    echo "SKIP: agent-fuzz needs root and unshare (pid/mount/net namespaces)"
    exit 0
fi
exec nice -n 10 python3 "$ROOT/scripts/agent-fuzz.py" "$@"
