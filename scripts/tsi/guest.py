#!/usr/bin/env python3
"""The guest half of the TSI checks (src/bin/tsi-test.rs stages it at /opt/sm-tsi/guest.py).

    python3 guest.py CHECK ARGS...

Prints what it saw and exits 0 when the check holds, 1 when not (the reason on stdout).
Every socket operation is bounded by a timeout, so a check fails rather than hangs.
"""
import errno
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zlib

TIMEOUT = 30


PERIOD = bytes(range(251)) * 300  # a whole number of periods longer than any chunk


def pattern(offset, n):
    """Byte i of the stream is i mod 251 (4096-byte chunks out of order would show)."""
    start = offset % 251
    return PERIOD[start:start + n]


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def http(url, want):
    body = urllib.request.urlopen(url, timeout=TIMEOUT).read().decode()
    if want not in body:
        fail(f"{url} answered {body!r}")
    print("ok:", body.strip())


def refused(host, port):
    s = socket.socket()
    s.settimeout(TIMEOUT)
    t0 = time.time()
    try:
        s.connect((host, int(port)))
        fail("blocking connect to a closed port succeeded")
    except ConnectionRefusedError:
        pass
    blocking = time.time() - t0
    s = socket.socket()
    s.setblocking(False)
    t0 = time.time()
    rc = s.connect_ex((host, int(port)))
    if rc == errno.EINPROGRESS:
        select.select([], [s], [], TIMEOUT)
        rc = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if rc != errno.ECONNREFUSED:
        fail(f"non-blocking connect gave {errno.errorcode.get(rc, rc)}, not ECONNREFUSED")
    print(f"ok: ECONNREFUSED blocking in {blocking:.2f} s, non-blocking in {time.time() - t0:.2f} s")


def nonblocking(host, port, want):
    s = socket.socket()
    s.setblocking(False)
    rc = s.connect_ex((host, int(port)))
    if rc not in (0, errno.EINPROGRESS):
        fail(f"connect_ex gave {errno.errorcode.get(rc, rc)}")
    _, w, _ = select.select([], [s], [], TIMEOUT)
    if not w or s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
        fail("not writable, or SO_ERROR set")
    s.setblocking(True)
    s.settimeout(TIMEOUT)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    if want.encode() not in data:
        fail(f"got {data!r}")
    print(f"ok: connect_ex {errno.errorcode.get(rc, rc)}, then poll, SO_ERROR 0, {len(data)} bytes")


def source(host, port, n):
    n = int(n)
    s = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    s.sendall(f"{n}\n".encode())
    got, off, ok = 0, 0, True
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        if chunk != pattern(off, len(chunk)):
            ok = False
        off += len(chunk)
    if off != n or not ok:
        fail(f"received {off} of {n} bytes, content {'right' if ok else 'WRONG'}")
    print(f"ok: {n} bytes host -> guest, content checked")


def sink(host, port, n):
    n = int(n)
    s = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    s.sendall(f"{n}\n".encode())
    adler = 1
    sent = 0
    while sent < n:
        chunk = pattern(sent, min(65536, n - sent))
        adler = zlib.adler32(chunk, adler)
        s.sendall(chunk)
        sent += len(chunk)
    reply = s.makefile().readline().split()
    want = f"{adler:08x}"
    if reply != [str(n), want]:
        fail(f"host saw {reply}, expected {[str(n), want]}")
    print(f"ok: {n} bytes guest -> host, host checksum {want}")


def udp(host, port):
    port = int(port)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    s.sendto(b"one", (host, port))
    data, frm = s.recvfrom(2048)
    if data != b"echo:one" or frm != (host, port):
        fail(f"unconnected: {data!r} from {frm}")
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(TIMEOUT)
    c.connect((host, port))
    c.send(b"two")
    data = c.recv(2048)
    if data != b"echo:two" or c.getpeername() != (host, port):
        fail(f"connected: {data!r}, peer {c.getpeername()}")
    print(f"ok: unconnected reply from {frm}, connected reply, peer {c.getpeername()}")


def udp2(host, port_a, port_b):
    """One unconnected socket, two destinations: each reply names its own source."""
    a, b = (host, int(port_a)), (host, int(port_b))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    s.sendto(b"to-a", a)
    s.sendto(b"to-b", b)
    got = {}
    for _ in range(2):
        data, frm = s.recvfrom(2048)
        got[data] = frm
    if got != {b"echo:to-a": a, b"echo:to-b": b}:
        fail(f"replies {got}")
    print(f"ok: replies attributed to {a} and {b}")


def dns(name, want):
    got = socket.gethostbyname(name)
    if got != want:
        fail(f"{name} resolved to {got}, not {want}")
    print(f"ok: {name} -> {got}")


def names(host, port):
    s = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    if s.getpeername() != (host, int(port)):
        fail(f"AF_INET getpeername {s.getpeername()}")
    s6 = socket.socket(socket.AF_INET6)
    s6.settimeout(TIMEOUT)
    s6.connect(("::ffff:" + host, int(port)))
    peer = s6.getpeername()
    if peer[:2] != ("::ffff:" + host, int(port)):
        fail(f"AF_INET6 (v4-mapped) getpeername {peer}")
    print(f"ok: getpeername {s.getpeername()} and {peer}")


def serve(port, bind):
    """An HTTP server in the background, answering 'guest server PORT'; returns once it listens."""
    code = (
        "import http.server,sys,socket\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "  def do_GET(self):\n"
        "    b=('guest server %s peer %s\\n'%(sys.argv[1],self.client_address[0])).encode()\n"
        "    self.send_response(200);self.send_header('Content-Length',str(len(b)));self.end_headers();self.wfile.write(b)\n"
        "  def log_message(self,*a): pass\n"
        "class S(http.server.ThreadingHTTPServer):\n"
        "  address_family=socket.AF_INET6 if ':' in sys.argv[2] else socket.AF_INET\n"
        "S((sys.argv[2],int(sys.argv[1])),H).serve_forever()\n")
    p = subprocess.Popen([sys.executable, "-c", code, port, bind], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(f"/run/sm-tsi-{port}.pid", "w") as f:
        f.write(str(p.pid))
    local = "::1" if ":" in bind else "127.0.0.1"
    for _ in range(300):
        try:
            socket.create_connection((local, int(port)), timeout=1).close()
            print(f"ok: serving on [{bind}]:{port}")
            return
        except OSError:
            time.sleep(0.1)
    fail(f"the server on [{bind}]:{port} did not come up")


def many(host, port, k, want):
    errors = []

    def one():
        try:
            body = urllib.request.urlopen(f"http://{host}:{port}/", timeout=TIMEOUT).read().decode()
            if want not in body:
                errors.append(body)
        except Exception as e:  # noqa: BLE001 - every failure counts
            errors.append(repr(e))
    threads = [threading.Thread(target=one) for _ in range(int(k))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        fail(f"{len(errors)} of {k} failed: {errors[:3]}")
    print(f"ok: {k} parallel connections")


CHECKS = {"http": http, "refused": refused, "nonblocking": nonblocking, "source": source, "sink": sink,
          "udp": udp, "udp2": udp2, "dns": dns, "names": names, "serve": serve, "many": many}

if __name__ == "__main__":
    socket.setdefaulttimeout(TIMEOUT)
    if len(sys.argv) < 2 or sys.argv[1] not in CHECKS:
        fail(f"usage: guest.py {'|'.join(CHECKS)} ARGS...")
    CHECKS[sys.argv[1]](*sys.argv[2:])
