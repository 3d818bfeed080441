"""The fetch stage: get the four Fashion-MNIST files from the first source that serves them intact.

A source is an http(s) URL, a file:// URL or a local directory holding the .gz files. Each file
is decompressed and its content checked against a SHA-256 before anything is written; the data
directory appears only when all four are verified, with a SHA256SUMS manifest beside them.
"""

import base64
import contextlib
import http.client
import re
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit
from urllib.request import url2pathname

import click

from fashion import data, fileio
from fashion.errors import FetchError

# torchvision's mirror for Fashion-MNIST, then the dataset's own repository.
DEFAULT_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
)
MAX_BYTES = 512 * 2**20  # per file, compressed and decompressed: the largest is 47 MB
CHUNK = 2**20
BACKOFF = 0.5  # seconds before the first retry of a source; doubled for each further one
# Seconds one file may take from one source, retries included: the largest file (26 MB
# compressed) in 10 minutes is 44 kB/s. A source slower than that (a server dripping bytes,
# an endless stream) is given up for the next one.
DEADLINE = 600.0
SOURCES_HINT = ("FASHION_MNIST_MIRROR (or --mirror) takes comma-separated http(s):// URLs, "
                "file:// URLs or directories")
LOCAL_COPY = ("a directory or URL holding the four .gz files, for example "
              "/usr/share/datasets/fashion-mnist from Debian's dataset-fashion-mnist")


# Up to the last @ before a space or quote: a password may hold an @, or a / that ends the host
# early, typed without percent-encoding.
_USERINFO = re.compile(r"(?<=://)[^\s'\"]*@")


def redact(text: str) -> str:
    """`text` with the user name and password of any URL in it replaced by ***."""
    return _USERINFO.sub("***@", text)


@dataclass(frozen=True)
class Source:
    location: str  # a URL ending in '/', without user name and password, or a directory
    is_url: bool
    authorization: str | None = None  # an HTTP Basic Authorization header from the URL's userinfo
    shown: str = ""  # the URL as messages show it, its userinfo replaced by ***

    def url(self, filename: str) -> str:
        return self.location + filename

    def name(self, filename: str) -> str:
        """The file as messages name it: never with a password."""
        if self.is_url:
            return (self.shown or self.location) + filename
        return str(Path(self.location) / filename)


def parse_sources(text: str | None) -> list[Source]:
    """Sources from FASHION_MNIST_MIRROR's comma-separated list, or the default mirrors."""
    items = [item.strip() for item in (text or "").split(",") if item.strip()]
    if not items:
        return [Source(url, True) for url in DEFAULT_MIRRORS]
    sources = []
    for item in items:
        try:
            parts = urlsplit(item)
            parts.port  # raises ValueError for a port that is not a number from 0 to 65535
        except ValueError as exc:
            raise FetchError(f"mirror {redact(item)!r} is not a valid URL ({_invalid(item, exc)}); "
                             f"{SOURCES_HINT}") from None
        scheme = parts.scheme.lower()
        if scheme in ("http", "https"):
            if not parts.hostname:
                raise FetchError(redact(f"mirror {item!r} names no host; {SOURCES_HINT}"))
            if "@" in item and "@" not in parts.netloc:
                # user:pa/ss@host would send the request to the host "user" and show the password.
                raise FetchError(f"mirror {redact(item)!r} has an @ after its host: {_ENCODE}")
            # A space or a non-ASCII letter in the path is sent percent-encoded, as a browser would.
            path = quote(parts.path.rstrip("/") + "/", safe="/%:@!$&'()*+,;=~")
            # user:password@ goes into a header urllib sends to this host only, never a message.
            userinfo, _, host = parts.netloc.rpartition("@")
            authorization = None
            if userinfo:
                user, _, password = userinfo.partition(":")
                credentials = f"{unquote(user)}:{unquote(password)}".encode()
                authorization = "Basic " + base64.b64encode(credentials).decode()
            location = urlunsplit(parts._replace(netloc=host, path=path))
            shown = redact(urlunsplit(parts._replace(path=path)))
            sources.append(Source(location, True, authorization, shown))
        elif scheme == "file":
            # file://usr/share/... (two slashes) parses as host "usr": refuse it rather than
            # look in /share/...
            if parts.netloc not in ("", "localhost"):
                raise FetchError(f"mirror {item!r} names a host ({parts.netloc}); a file:// URL "
                                 "takes an absolute path after three slashes: file:///path")
            sources.append(Source(url2pathname(parts.path), False))
        elif "://" in item:
            raise FetchError(redact(f"mirror {item!r} is not supported; {SOURCES_HINT}"))
        else:
            sources.append(Source(item, False))
    return sources


_ENCODE = ("a / ? # in its user name or password, or an @ in its path, must be percent-encoded: "
           "%2F %3F %23 %40")


def _invalid(item: str, exc: ValueError) -> str:
    """Why `item` is not a URL, in words that hold no part of its password: the parser's own
    reason can quote one (an unencoded / in it ends the host early, and the rest is taken for a
    port), so the reason is that of the URL with its user name and password taken out."""
    shown = redact(item)
    if shown == item:
        return str(exc)
    try:
        urlsplit(shown).port
    except ValueError as without:
        return str(without)
    return _ENCODE


def expected_checksums(path: str | None) -> dict[str, str]:
    """The built-in checksums, or those of the file FASHION_MNIST_CHECKSUMS names."""
    if not path:
        return dict(data.SHA256)
    try:
        checksums = data.read_checksums(Path(path))
    except OSError as exc:
        raise FetchError(f"FASHION_MNIST_CHECKSUMS: cannot read {path} ({exc.strerror})") from None
    missing = [name for name in data.FILES if name not in checksums]
    if missing:
        raise FetchError(f"FASHION_MNIST_CHECKSUMS: {path} lists no checksum for {', '.join(missing)}")
    return checksums


class _Rejected(Exception):
    """This source did not deliver this file; the next source is tried."""


class _Unreachable(_Rejected):
    """Retries used up: the source is skipped for the remaining files instead of costing each
    of them the same timeouts again."""


class _TooSlow(_Unreachable):
    """Past the deadline: the source is not retried, and is skipped for the remaining files."""


class _Transient(Exception):
    """A failure worth retrying on the same source."""


class _NoOddRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise _Rejected(redact(f"redirected to {newurl}, which is not http(s)"))
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_opener = urllib.request.build_opener(_NoOddRedirects)


def _http_get(source: Source, filename: str, timeout: float, max_bytes: int,
              deadline: "_Deadline") -> bytes:
    url = source.url(filename)
    request = urllib.request.Request(url, headers={"User-Agent": "fashion-fetch"})
    if source.authorization:
        # Unredirected: a redirect to another host does not get the credentials.
        request.add_unredirected_header("Authorization", source.authorization)
    try:
        response = _opener.open(request, timeout=timeout)
    except ValueError as exc:  # a URL http.client cannot send; UnicodeError for a non-ASCII host
        raise _Rejected(redact(f"not a URL that can be requested ({exc})")) from None
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code == 429:
            raise _Transient(f"HTTP {exc.code}") from None
        raise _Rejected(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, socket.gaierror):  # the resolver's words alone name no host
            raise _Transient(f"the host name {urlsplit(url).hostname} could not be resolved "
                             f"({reason.strerror})") from None
        raise _Transient(redact(f"{'timed out' if isinstance(reason, TimeoutError) else reason}")) \
            from None
    with response:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise _Rejected(f"serves {declared} bytes, more than the limit of {max_bytes}")
        total = int(declared) if declared and declared.isdigit() else 0
        chunks, received = [], 0
        with click.progressbar(length=total or max_bytes, label=url.rsplit("/", 1)[-1],
                               file=sys.stderr, show_percent=bool(total)) as bar:
            while True:
                try:
                    # Never ask for more than one byte past the limit: an endless stream is cut
                    # off at the limit, not a chunk later. read1 returns what one read of the
                    # socket brings, so that a trickle cannot hold it past the deadline.
                    chunk = response.read1(min(CHUNK, max_bytes + 1 - received))
                except (TimeoutError, socket.timeout):
                    raise _Transient("timed out while downloading") from None
                except (http.client.HTTPException, OSError) as exc:
                    raise _Transient(f"download broke off ({type(exc).__name__})") from None
                if not chunk:
                    break
                received += len(chunk)
                if received > max_bytes:
                    raise _Rejected(f"sent more than the limit of {max_bytes} bytes; cut off")
                chunks.append(chunk)
                bar.update(len(chunk))
                deadline.received = received
                deadline.check()
        if total and received != total:
            raise _Transient(f"download broke off after {received} of {total} bytes")
        return b"".join(chunks)


@dataclass
class _Deadline:
    """The time one file may take from one source, retries included."""
    seconds: float
    start: float = 0.0
    received: int = 0  # bytes of the body so far, for the message

    def __post_init__(self):
        self.start = time.monotonic()

    def check(self) -> None:
        if time.monotonic() - self.start >= self.seconds:
            raise self._passed()

    def _passed(self) -> "_TooSlow":
        elapsed = time.monotonic() - self.start
        return _TooSlow(f"too slow: {self.received} bytes in {elapsed:.0f} s, past the deadline "
                        f"of {self.seconds:g} s per file (--deadline)")

    @contextlib.contextmanager
    def enforced(self) -> Iterator[None]:
        """Raise _TooSlow in the block the moment the deadline passes, whatever it waits for.

        A server that sends a byte now and then never lets a read time out, in its headers as
        in its body, and urllib reads the headers where no check between reads can reach; an
        alarm signal interrupts the read itself. Only the main thread receives signals: in
        another the deadline is checked after each read of the body only.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def expired(signum, frame):
            raise self._passed()  # not check(): the alarm's clock may run a hair ahead of ours

        previous = signal.signal(signal.SIGALRM, expired)
        began = time.monotonic()
        # An alarm already set (a test runner's timeout) is set again afterwards, for what is left.
        earlier, _ = signal.setitimer(signal.ITIMER_REAL,
                                      max(self.seconds - (began - self.start), 0.001))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            if earlier:
                signal.setitimer(signal.ITIMER_REAL,
                                 max(earlier - (time.monotonic() - began), 0.001))


def _read(source: Source, filename: str, timeout: float, retries: int, max_bytes: int,
          deadline_s: float = DEADLINE) -> bytes:
    if not source.is_url:
        path = Path(source.location) / filename
        try:
            if not path.is_file():
                raise _Rejected("no such file")
            if path.stat().st_size > max_bytes:
                raise _Rejected(f"larger than the limit of {max_bytes} bytes")
            return path.read_bytes()
        except OSError as exc:  # unreadable here; another source may do
            raise _Rejected(exc.strerror or str(exc)) from None
    deadline = _Deadline(deadline_s)
    with deadline.enforced():
        for attempt in range(retries + 1):
            try:
                return _http_get(source, filename, timeout, max_bytes, deadline)
            except _Transient as exc:
                if attempt == retries:
                    tries = "1 attempt" if attempt == 0 else f"{attempt + 1} attempts"
                    raise _Unreachable(f"{exc} ({tries})") from None
                delay = BACKOFF * 2**attempt
                click.echo(f"{source.name(filename)}: {exc}; retrying in {delay:g} s", err=True)
                time.sleep(delay)
                deadline.check()
    raise AssertionError("unreachable")


def _gunzip(raw: bytes, max_bytes: int) -> bytes:
    """The content of a gzip file: one member, or several as bgzip and `cat a.gz b.gz` write,
    which gzip reads as one file. Zero bytes after the last member are padding, as for gzip."""
    content, rest = b"", raw
    while True:
        inflater = zlib.decompressobj(wbits=31)  # 31: gzip container
        try:
            content += inflater.decompress(rest, max_bytes + 1 - len(content))
        except zlib.error:
            if rest is not raw:
                raise _Rejected("data after the gzip data is not gzip") from None
            # A proxy, captive portal or wrong URL typically answers with an HTML page.
            page = "; an HTML page: is the URL right?" if raw.lstrip()[:1] == b"<" else ""
            raise _Rejected(f"not gzip data (it starts with {raw[:24]!r}){page}") from None
        if len(content) > max_bytes:
            raise _Rejected(f"decompresses to more than the limit of {max_bytes} bytes")
        if not inflater.eof:
            raise _Rejected("truncated gzip data")
        rest = inflater.unused_data
        if not rest.strip(b"\0"):
            return content


def fetch_file(name: str, digest: str, sources: list[Source], *, timeout: float, retries: int,
               max_bytes: int, unreachable: dict[Source, str], deadline: float = DEADLINE) -> bytes:
    """The verified content of one file from the first source that has it intact.

    `unreachable` maps sources that used up their retries to why; it is updated, and those
    sources are skipped, so a dead mirror costs its timeouts once, not once per file.
    """
    failures = []
    for source in sources:
        where = source.name(name + ".gz")
        if source in unreachable:
            failures.append(f"  {where}: skipped, unreachable for an earlier file "
                            f"({unreachable[source]})")
            continue
        try:
            content = _gunzip(_read(source, name + ".gz", timeout, retries, max_bytes, deadline),
                             max_bytes)
            if data.sha256(content) != digest:
                raise _Rejected(f"content has SHA-256 {data.sha256(content)[:16]}..., "
                                f"expected {digest[:16]}...")
            return content
        except _Rejected as exc:
            if isinstance(exc, _Unreachable):
                unreachable[source] = str(exc)
            failures.append(f"  {where}: {exc}")
            if source != sources[-1]:
                # Say so now: when a later source succeeds, this is the only trace of the failure.
                click.echo(f"{where}: {exc}; trying the next source", err=True)
    defaults = [source.location for source in sources] == list(DEFAULT_MIRRORS)
    raise FetchError(f"no source delivered a verified {name}.gz; tried:\n" + "\n".join(failures)
                     + (f"\nTo use a local copy, set FASHION_MNIST_MIRROR to {LOCAL_COPY}." if defaults else
                        f"\nCheck FASHION_MNIST_MIRROR (or --mirror): each source should be "
                        f"{LOCAL_COPY}."))


def run(*, dest: Path, mirror: str | None, checksums: str | None, timeout: float, retries: int,
        max_bytes: int = MAX_BYTES, deadline: float = DEADLINE) -> None:
    """The fetch stage: verify all four files, then move them into `dest` together."""
    sources = parse_sources(mirror)
    expected = expected_checksums(checksums)
    unreachable: dict[Source, str] = {}
    with fileio.staged_dir(dest, fileio.matching(*data.FILES, data.MANIFEST)) as staging:
        for name in data.FILES:
            content = fetch_file(name, expected[name], sources, timeout=timeout, retries=retries,
                                 max_bytes=max_bytes, unreachable=unreachable, deadline=deadline)
            (staging / name).write_bytes(content)
        (staging / data.MANIFEST).write_text(data.format_checksums({n: expected[n] for n in data.FILES}))
    click.echo(f"fetched and verified {len(data.FILES)} files into {dest}", err=True)
