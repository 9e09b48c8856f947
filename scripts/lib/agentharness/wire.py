"""The agent's wire format (protocol v5 frames), the limits the harness checks against, and the
constants every part of the harness shares. Standard library only."""
import json
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PAYLOAD = os.path.join(ROOT, "crates/supermachine-kernel-x86-64/payload/supermachine-agent.xz")

REQUEST, CONTROL, STDIN, STDOUT, STDERR, RESIZE, SIGNAL, EXIT, ERROR = 0xFF, 0xFE, 0, 1, 2, 3, 4, 5, 6
NAMES = {REQUEST: "REQUEST", CONTROL: "CONTROL", STDIN: "STDIN", STDOUT: "STDOUT", STDERR: "STDERR",
         RESIZE: "RESIZE", SIGNAL: "SIGNAL", EXIT: "EXIT", ERROR: "ERROR"}
MAX_FRAME = 16 * 1024 * 1024
FIRST_FRAME_TIMEOUT = 10.0  # crates/supermachine-agent/src/limits.rs
MAX_CONNECTIONS = 128
AGENT_TO_HOST = {STDOUT, STDERR, EXIT, ERROR, CONTROL}
RX_CAP = 64 << 20  # more than this on one connection is endless output
KEEP_OUTPUT = 8 << 20  # STDOUT/STDERR bytes kept per connection (the rest is only counted)
RSS_SLACK_KIB = 64  # "back to baseline": RSS (without the binary's code pages) within this much of it
# musl's malloc (mallocng) keeps the last, emptied group of a size class that is "bouncing"
# (freed and re-created in a short span) instead of unmapping it: up to 128 KiB for the largest
# class, resident until that class is used again. So the RSS after one busy stretch can sit
# ~130 KiB above the baseline and come back later; a leak raises the floor instead.
RSS_SPIKE_KIB = 512  # the most RSS over the baseline allowed at any check, retained or not


def frame(kind, payload=b""):
    return struct.pack(">BI", kind, len(payload)) + payload


def jdump(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def jframe(kind, obj):
    return frame(kind, jdump(obj))


class Violation(Exception):
    pass
