#!/usr/bin/env bash
# Soak test of the real agent binary: N concurrent clients run mixed, checked exec/file/control
# sessions against one agent (same sandbox as scripts/agent-fuzz.sh) for S seconds; reports
# throughput, p50/p99 latency per operation, peak RSS, and RSS/threads/fds at the end against
# the start (leaks). Details: scripts/agent-soak.py --help, TESTING.md.
#
#   scripts/agent-soak.sh [--clients N] [--seconds S] [--agent PATH] [--json FILE]
#
# Default: 16 clients, 60 s. One process, at nice 10. Needs root.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null; then
    echo "error: agent-soak needs root and unshare (pid/mount/net namespaces)" >&2
    exit 1
fi
exec nice -n 10 python3 "$ROOT/scripts/agent-soak.py" "$@"
