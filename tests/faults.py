"""Fault injection for the fault tests, and the checks every failure must pass.

`Mirror` is a real HTTP server on 127.0.0.1 serving a directory of .gz files; `faults` maps a file
name (or "*" for every file) to a function that answers that request wrongly. `Silent` accepts
connections and never answers. Both record when each request or connection came, and stop
within a second of the test ending, whatever state their clients left them in.

`assert_failed` and `assert_no_leftovers` are what "a clear error and nothing lost" means.
"""

import gzip
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

Fault = Callable[[BaseHTTPRequestHandler, bytes], None]
ENDLESS_CAP = 64 * 2**20  # an "endless" stream ends here, so a broken size limit fails, not hangs


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked transfer encoding needs it
    server: "_Server"

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        self.server.mirror.requests.append((time.monotonic(), name))
        path = self.server.mirror.root / name
        body = path.read_bytes() if path.is_file() else None
        fault = self.server.mirror.faults.get(name) or self.server.mirror.faults.get("*")
        try:
            if fault is not None:
                fault(self, body or b"")
            elif body is None:
                self.send_error(404)
            else:
                send(self, body)
        except OSError:
            pass  # the client gave up, which is what several faults are for
        self.close_connection = True

    def log_message(self, format, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    mirror: "Mirror"


class Mirror:
    """An HTTP mirror of the .gz files in `root`, with a fault per file name."""

    def __init__(self, root: Path, faults: dict[str, Fault] | None = None):
        self.root, self.faults = Path(root), dict(faults or {})
        self.requests: list[tuple[float, str]] = []
        self.sent = 0  # bytes the endless streams got out before the client hung up
        self.stopping = threading.Event()  # stalled responses wait on it
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.mirror = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/data/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})  # quick to shut down

    def names(self) -> list[str]:
        return [name for _, name in self.requests]

    def __enter__(self) -> "Mirror":
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class Silent:
    """A TCP server that accepts connections and never sends a byte: a hung mirror."""

    def __init__(self):
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}/data/"
        self.connections: list[float] = []
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._socket.accept()
            except TimeoutError:
                continue
            self.connections.append(time.monotonic())
            self._held.append(conn)

    def __enter__(self) -> "Silent":
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self._held:
            conn.close()
        self._socket.close()


def closed_port_url() -> str:
    """The URL of a loopback port nothing listens on: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/data/"


# --- faults: each answers one request wrongly ------------------------------------------------

def send(handler, body: bytes, status: int = 200, content_type: str = "application/gzip",
         length: int | None = None) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    handler.end_headers()
    handler.wfile.write(body)
    handler.wfile.flush()


def html_error_page(handler, body):
    """What a captive portal or a misconfigured CDN does: an error page with status 200."""
    send(handler, b"<!DOCTYPE html><html><body><h1>Service unavailable</h1></body></html>\n",
         content_type="text/html")


def not_gzip(handler, body):
    send(handler, bytes(range(256)) * 4)


def truncated(handler, body):
    """Half the file, declared as the whole: the HTTP layer sees nothing wrong."""
    send(handler, body[:len(body) // 2])


def wrong_content(handler, body):
    """Valid gzip of other bytes (an old version of the file, say): only the checksum tells."""
    content = bytearray(gzip.decompress(body))
    content[-1] ^= 0xFF
    send(handler, gzip.compress(bytes(content), mtime=0))


def _half_body(handler, body):
    """Headers declaring the whole body, then only its first half."""
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body[:len(body) // 2])
    handler.wfile.flush()


def interrupted(handler, body):
    """The connection drops halfway through a body of the declared length."""
    _half_body(handler, body)
    handler.connection.shutdown(socket.SHUT_RDWR)


def reset(handler, body):
    """Headers and half the body, then a TCP reset instead of the rest."""
    _half_body(handler, body)
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.connection.close()


def stalled(handler, body):
    """Headers and half the body, then silence until the test ends."""
    _half_body(handler, body)
    handler.server.mirror.stopping.wait(30)


def dripping(handler, body):
    """Headers declaring the whole body, then one byte every 0.2 s: never silent long enough
    for a read to time out, and never done."""
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    for byte in body:
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        handler.server.mirror.sent += 1
        if handler.server.mirror.stopping.wait(0.2):
            return


def dripping_headers(handler, body):
    """A status line, then one header a byte every 0.2 s, never ending: the client is still
    reading headers, before any of the body, and no read times out."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    handler.wfile.flush()
    while not handler.server.mirror.stopping.wait(0.2):
        handler.wfile.write(b"a")
        handler.wfile.flush()
        handler.server.mirror.sent += 1


def status(code: int) -> Fault:
    def fault(handler, body):
        handler.send_error(code)
    return fault


def redirect(location: str) -> Fault:
    """A 302 to `location`, in which {name} stands for the requested file's name."""
    def fault(handler, body):
        handler.send_response(302)
        handler.send_header("Location", location.format(name=handler.path.rsplit("/", 1)[-1]))
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return fault


def declares_huge(handler, body):
    """A Content-Length far above any limit; the client should not start reading."""
    handler.send_response(200)
    handler.send_header("Content-Length", str(2**40))
    handler.end_headers()
    handler.wfile.write(b"\0" * 2**16)
    handler.wfile.flush()


def _stream(handler, chunked: bool):
    handler.send_response(200)
    if chunked:
        handler.send_header("Transfer-Encoding", "chunked")
    else:
        handler.send_header("Connection", "close")  # no length: the body ends when the socket does
    handler.end_headers()
    mirror, piece = handler.server.mirror, b"\x1f\x8b" + b"\0" * (2**16 - 2)
    while mirror.sent < ENDLESS_CAP and not mirror.stopping.is_set():
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        mirror.sent += len(piece)
    if chunked:
        handler.wfile.write(b"0\r\n\r\n")


def endless_chunked(handler, body):
    _stream(handler, chunked=True)


def endless_unsized(handler, body):
    _stream(handler, chunked=False)


def gzip_bomb(size: int) -> Fault:
    """A small .gz that decompresses to `size` zero bytes."""
    bomb = gzip.compress(b"\0" * size, mtime=0)

    def fault(handler, body):
        send(handler, bomb)
    return fault


# --- checks ------------------------------------------------------------------------------------

def clean_env(**extra) -> dict:
    """This environment without the variables that would change what a stage does."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASHION_MNIST_MIRROR", "FASHION_MNIST_CHECKSUMS", "FASHION_DEBUG")}
    return {**env, **extra}


def allocate_too_much(*args, **kwargs) -> None:
    """A stand-in for any step, failing as the CPU allocator fails for memory it cannot give."""
    import torch  # here: the fetch tests use this module without torch

    torch.empty(2**62, dtype=torch.uint8)


def assert_failed(done: subprocess.CompletedProcess, *phrases: str, code: int = 1) -> None:
    """The given exit code, each phrase in stderr, and no traceback anywhere."""
    output = done.stdout + done.stderr
    assert done.returncode == code, output
    assert "Traceback" not in output, output
    for phrase in phrases:
        assert phrase in done.stderr, f"{phrase!r} not in:\n{done.stderr}"


def assert_no_leftovers(root: Path) -> None:
    """No staging files or directories (fashion/fileio.py's .NAME.tmp-*) anywhere under root."""
    leftovers = [str(p) for p in Path(root).rglob(".*.tmp-*")]
    assert not leftovers, leftovers


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root by relative path, with its bytes."""
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def outputs(root: Path, paths) -> dict:
    """The bytes of each output under root: a file's, or a directory's snapshot."""
    return {path: snapshot(root / path) if (root / path).is_dir() else (root / path).read_bytes()
            for path in paths}
