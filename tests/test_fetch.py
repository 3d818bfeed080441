"""fashion/fetch.py called in this process against the loopback servers of tests/faults.py.

tests/test_faults_fetch.py runs scripts/fetch.py as a user does; these run the same module in
the test's own process, where `make mutation` can see which tests reach which function.
"""

import gzip
import hashlib
import random
import re
import zlib

import pytest

from fashion import data, fetch
from fashion.errors import FashionError, FetchError
from tests import faults as fs

LIMIT = 200_000  # max_bytes for the oversize faults: above every synthetic file


def fetched(dest, checksums) -> dict[str, str]:
    """SHA-256 of each fetched file, checked against the checksum file by hand."""
    expected = dict(reversed(line.split()) for line in checksums.read_text().splitlines())
    found = {p.name: data.sha256(p.read_bytes()) for p in dest.iterdir() if p.name != data.MANIFEST}
    assert found == expected
    return found


def test_an_http_mirror_serves_every_file(tmp_path, dataset, capsys):
    mirror, checksums = dataset
    with fs.Mirror(mirror) as good:
        fetch.run(dest=tmp_path / "out", mirror=good.url, checksums=str(checksums), timeout=5,
                  retries=0)
        assert sorted(good.names()) == sorted(f"{n}.gz" for n in data.FILES)
    fetched(tmp_path / "out", checksums)
    assert (tmp_path / "out" / data.MANIFEST).read_text() == checksums.read_text()
    assert f"fetched and verified 4 files into {tmp_path / 'out'}" in capsys.readouterr().err


@pytest.mark.parametrize("fault, reason", [
    (fs.html_error_page, "not gzip data (it starts with b'<!DOCTYPE html><html><bo'); an HTML "
                         "page: is the URL right?"),
    (fs.not_gzip, "not gzip data"),
    (fs.truncated, "truncated gzip data"),
    (fs.wrong_content, "content has SHA-256"),
    (fs.status(404), "HTTP 404 Not Found"),
    (fs.interrupted, "download broke off after"),
    (fs.declares_huge, f"serves {2**40} bytes, more than the limit of {LIMIT}"),
    (fs.endless_chunked, f"sent more than the limit of {LIMIT} bytes; cut off"),
    (fs.endless_unsized, f"sent more than the limit of {LIMIT} bytes; cut off"),
    (fs.gzip_bomb(4 * LIMIT), f"decompresses to more than the limit of {LIMIT} bytes"),
])
def test_a_bad_response_is_rejected_for_the_next_mirror(tmp_path, dataset, capsys, fault, reason):
    mirror, checksums = dataset
    with fs.Mirror(mirror, {f"{data.FILES[0]}.gz": fault}) as bad, fs.Mirror(mirror) as good:
        fetch.run(dest=tmp_path / "out", mirror=f"{bad.url},{good.url}",
                  checksums=str(checksums), timeout=5, retries=0, max_bytes=LIMIT)
        # The bad mirror serves the other three, unless the failure is a transient one: then it is
        # taken to be unreachable, and skipped for the remaining files.
        skipped = data.FILES if fault is fs.interrupted else data.FILES[:1]
        assert good.names() == [f"{name}.gz" for name in skipped]
    fetched(tmp_path / "out", checksums)
    err = capsys.readouterr().err
    assert f"{bad.url}{data.FILES[0]}.gz: {reason}" in err and "; trying the next source" in err


@pytest.mark.parametrize("code", [429, 500, 503])
def test_busy_and_failing_servers_are_retried_then_skipped(tmp_path, dataset, monkeypatch,
                                                            capsys, code):
    monkeypatch.setattr(fetch, "BACKOFF", 0.01)
    mirror, checksums = dataset
    with fs.Mirror(tmp_path, {"*": fs.status(code)}) as busy, fs.Mirror(mirror) as good:
        fetch.run(dest=tmp_path / "out", mirror=f"{busy.url},{good.url}",
                  checksums=str(checksums), timeout=5, retries=2)
        assert len(busy.requests) == 3  # a try and two retries, for the first file only
    fetched(tmp_path / "out", checksums)
    err = capsys.readouterr().err
    assert f"HTTP {code}; retrying in 0.01 s" in err and "retrying in 0.02 s" in err
    assert f"{busy.url}{data.FILES[0]}.gz: HTTP {code} (3 attempts); trying the next source" in err


def test_every_source_failing_names_each_and_what_it_should_be(tmp_path, dataset):
    mirror, checksums = dataset
    with fs.Mirror(mirror, {"*": fs.status(404)}) as bad:
        with pytest.raises(FetchError) as failed:
            fetch.run(dest=tmp_path / "out", mirror=f"{bad.url},{tmp_path / 'none'}",
                      checksums=str(checksums), timeout=5, retries=0)
    name = data.FILES[0]
    assert str(failed.value).splitlines() == [
        f"no source delivered a verified {name}.gz; tried:",
        f"  {bad.url}{name}.gz: HTTP 404 Not Found",
        f"  {tmp_path / 'none' / name}.gz: no such file",
        f"Check FASHION_MNIST_MIRROR (or --mirror): each source should be {fetch.LOCAL_COPY}."]
    assert not (tmp_path / "out").exists()


def test_a_redirect_to_another_http_mirror_is_followed(tmp_path, dataset):
    mirror, checksums = dataset
    with fs.Mirror(mirror) as good, fs.Mirror(mirror, {"*": fs.redirect(good.url + "{name}")}) as moved:
        fetch.run(dest=tmp_path / "out", mirror=moved.url, checksums=str(checksums), timeout=5,
                  retries=0)
        assert moved.names() == good.names() == [f"{n}.gz" for n in data.FILES]
    fetched(tmp_path / "out", checksums)


@pytest.mark.parametrize("location, reason", [
    ("ftp://127.0.0.1/{name}", "redirected to ftp://127.0.0.1/{name}, which is not http(s)"),
    # Followed, whatever the case of its scheme: the port then refuses the connection.
    ("HTTPS://127.0.0.1:9/{name}", "[Errno 111] Connection refused (1 attempt)"),
])
def test_a_redirect_is_followed_only_to_http(tmp_path, dataset, capsys, location, reason):
    mirror, checksums = dataset
    with fs.Mirror(mirror, {"*": fs.redirect(location)}) as sly, fs.Mirror(mirror) as good:
        fetch.run(dest=tmp_path / "out", mirror=f"{sly.url},{good.url}", checksums=str(checksums),
                  timeout=5, retries=0)
    fetched(tmp_path / "out", checksums)
    name = f"{data.FILES[0]}.gz"
    assert f"{sly.url}{name}: {reason.format(name=name)}" in capsys.readouterr().err


def test_a_mirror_that_never_answers_times_out_and_is_skipped(tmp_path, dataset, capsys):
    mirror, checksums = dataset
    with fs.Silent() as silent, fs.Mirror(mirror) as good:
        fetch.run(dest=tmp_path / "out", mirror=f"{silent.url},{good.url}",
                  checksums=str(checksums), timeout=0.5, retries=0)
    fetched(tmp_path / "out", checksums)
    assert (f"{silent.url}{data.FILES[0]}.gz: timed out (1 attempt); trying the next source"
            in capsys.readouterr().err)


def test_the_deadline_in_this_process_gives_up_dripping_headers_and_keeps_an_earlier_alarm(
        tmp_path, dataset, capsys):
    import signal

    def earlier(signum, frame):
        raise AssertionError("the earlier alarm went off")

    mirror, checksums = dataset
    previous = signal.signal(signal.SIGALRM, earlier)
    signal.setitimer(signal.ITIMER_REAL, 60)
    try:
        with fs.Mirror(mirror, {"*": fs.dripping_headers}) as slow, fs.Mirror(mirror) as good:
            fetch.run(dest=tmp_path / "out", mirror=f"{slow.url},{good.url}",
                      checksums=str(checksums), timeout=5, retries=0, deadline=1)
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert signal.getsignal(signal.SIGALRM) is earlier
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert 50 < left < 60  # set again for what was left of it
    fetched(tmp_path / "out", checksums)
    assert "past the deadline of 1 s per file" in capsys.readouterr().err


# --- sources, files and messages, against values written out by hand ----------------------------

HINT = ("FASHION_MNIST_MIRROR (or --mirror) takes comma-separated http(s):// URLs, file:// URLs "
        "or directories")


def test_no_mirror_means_the_two_public_mirrors():
    for text in (None, "", " , "):
        sources = fetch.parse_sources(text)
        assert [s.name("a.gz") for s in sources] == [
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/a.gz",
            "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/a.gz"]
        assert all(s.is_url and s.authorization is None for s in sources)


def test_a_mirror_list_gives_where_to_ask_what_to_send_and_what_to_show():
    # Base64 of "reader:s3cret!" and of "token:", by `printf ... | base64`.
    web, token, plain, local, file_url, localhost = fetch.parse_sources(
        " http://reader:s3cret%21@mirror.example:8080/Fashion MNIST/dätä// ,"
        "https://token@example.org/~me/my%20data+X,HTTPS://example.org/pub/,, /srv/fashion ,"
        "file:///srv/my%20data,file://localhost/srv/x")
    assert web == fetch.Source(
        "http://mirror.example:8080/Fashion%20MNIST/d%C3%A4t%C3%A4/", True,
        "Basic cmVhZGVyOnMzY3JldCE=", "http://***@mirror.example:8080/Fashion%20MNIST/d%C3%A4t%C3%A4/")
    assert token == fetch.Source("https://example.org/~me/my%20data+X/", True, "Basic dG9rZW46",
                                 "https://***@example.org/~me/my%20data+X/")
    assert plain == fetch.Source("https://example.org/pub/", True, None, "https://example.org/pub/")
    assert web.name("a.gz") == "http://***@mirror.example:8080/Fashion%20MNIST/d%C3%A4t%C3%A4/a.gz"
    assert web.url("a.gz") == "http://mirror.example:8080/Fashion%20MNIST/d%C3%A4t%C3%A4/a.gz"
    assert local == fetch.Source("/srv/fashion", False) and local.name("a.gz") == "/srv/fashion/a.gz"
    assert (file_url, localhost) == (fetch.Source("/srv/my data", False), fetch.Source("/srv/x", False))


@pytest.mark.parametrize("item, message", [
    ("ftp://reader:s3cret@example.com/", f"mirror 'ftp://***@example.com/' is not supported; {HINT}"),
    ("http://reader:s3cret@[::1/", f"mirror 'http://***@[::1/' is not a valid URL (Invalid IPv6 URL); {HINT}"),
    # An unencoded / in the password ends the host early: the parser's own reason would quote it.
    ("http://reader:xyzzy/plugh@example.com/", "mirror 'http://***@example.com/' is not a valid URL (a "
     "/ ? # in its user name or password, or an @ in its path, must be percent-encoded: %2F %3F %23 "
     f"%40); {HINT}"),
    ("http://example.com/data@2/", "mirror 'http://***@2/' has an @ after its host: a / ? # in its "
     "user name or password, or an @ in its path, must be percent-encoded: %2F %3F %23 %40"),
    ("http://127.0.0.1:99999/", "mirror 'http://127.0.0.1:99999/' is not a valid URL (Port out of range "
                                f"0-65535); {HINT}"),
    ("https://reader:s3cret@/fashion/", f"mirror 'https://***@/fashion/' names no host; {HINT}"),
    ("file://usr/share/fashion", "mirror 'file://usr/share/fashion' names a host (usr); a file:// URL "
                                 "takes an absolute path after three slashes: file:///path"),
])
def test_a_source_that_cannot_be_used_is_refused_in_one_sentence(item, message):
    with pytest.raises(FetchError) as refused:
        fetch.parse_sources(f"/srv/fashion,{item}")
    assert str(refused.value) == message


def test_the_checksums_are_the_built_in_ones_or_all_four_of_a_file(tmp_path):
    assert fetch.expected_checksums(None) == fetch.expected_checksums("") == data.SHA256
    with pytest.raises(FetchError) as failed:
        fetch.expected_checksums(str(tmp_path / "absent"))
    assert str(failed.value) == (f"FASHION_MNIST_CHECKSUMS: cannot read {tmp_path / 'absent'} "
                                 "(No such file or directory)")
    partial = tmp_path / "partial.sha256"
    partial.write_text(f"{'0' * 64}  train-images-idx3-ubyte\n{'1' * 64}  train-labels-idx1-ubyte\n")
    with pytest.raises(FetchError) as failed:
        fetch.expected_checksums(str(partial))
    assert str(failed.value) == (f"FASHION_MNIST_CHECKSUMS: {partial} lists no checksum for "
                                 "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte")


def from_folder(folder, gz: bytes, content: bytes, max_bytes: int = 10**6, **kwargs) -> bytes:
    """fetch_file of f.gz, written to `folder`, expected to hold `content`."""
    folder.mkdir(exist_ok=True)
    (folder / "f.gz").write_bytes(gz)
    return fetch.fetch_file("f", hashlib.sha256(content).hexdigest(), [fetch.Source(str(folder), False)],
                            timeout=1, retries=0, max_bytes=max_bytes, unreachable={}, **kwargs)


def refusal(folder, gz: bytes, content: bytes, max_bytes: int = 10**6) -> str:
    """Why fetch_file refused f.gz from `folder`."""
    with pytest.raises(FetchError) as failed:
        from_folder(folder, gz, content, max_bytes)
    return str(failed.value).splitlines()[1].removeprefix(f"  {folder / 'f.gz'}: ")


def test_gzip_files_are_read_as_gzip_reads_them(tmp_path):
    content = bytes(range(256)) * 40
    one = gzip.compress(content, mtime=0)
    assert from_folder(tmp_path / "one", one, content) == content
    # Several members (bgzip, `cat a.gz b.gz`), then zero padding: gzip reads them as one file.
    two = gzip.compress(content[:1000], mtime=0) + gzip.compress(content[1000:], mtime=0) + b"\0" * 8
    assert from_folder(tmp_path / "two", two, content) == content
    assert refusal(tmp_path / "tail", one + b"<html>", content) == "data after the gzip data is not gzip"
    assert refusal(tmp_path / "tail2", one + b"\0XX", content) == "data after the gzip data is not gzip"
    assert refusal(tmp_path / "half", one[:len(one) // 2], content) == "truncated gzip data"
    # zlib's own format is not gzip, though the same library reads both.
    squeezed = zlib.compress(content)
    assert refusal(tmp_path / "zlib", squeezed, content) == f"not gzip data (it starts with {squeezed[:24]!r})"
    assert refusal(tmp_path / "page", b"  <html>Not found</html>", content) == (
        "not gzip data (it starts with b'  <html>Not found</html>'); an HTML page: is the URL right?")
    other = content[:-1] + b"?"
    assert refusal(tmp_path / "other", gzip.compress(other, mtime=0), content) == (
        f"content has SHA-256 {hashlib.sha256(other).hexdigest()[:16]}..., "
        f"expected {hashlib.sha256(content).hexdigest()[:16]}...")


def test_the_size_limit_admits_its_own_size(tmp_path):
    content = bytes(range(256)) * 40  # 10,240 bytes, compressed to far fewer
    gz = gzip.compress(content, mtime=0)
    assert from_folder(tmp_path / "a", gz, content, max_bytes=len(content)) == content
    assert refusal(tmp_path / "b", gz, content, max_bytes=len(content) - 1) == (
        f"decompresses to more than the limit of {len(content) - 1} bytes")
    noise = random.Random(0).randbytes(1000)  # incompressible: the .gz is the larger
    gz = gzip.compress(noise, mtime=0)
    assert from_folder(tmp_path / "c", gz, noise, max_bytes=len(gz)) == noise
    assert refusal(tmp_path / "d", gz, noise, max_bytes=len(gz) - 1) == (
        f"larger than the limit of {len(gz) - 1} bytes")
    with fs.Mirror(tmp_path / "c") as mirror:
        assert fetch.fetch_file("f", hashlib.sha256(noise).hexdigest(), fetch.parse_sources(mirror.url),
                                timeout=5, retries=0, max_bytes=len(gz), unreachable={}) == noise


def test_a_request_names_the_client_and_sends_the_url_s_credentials(tmp_path, dataset):
    mirror, checksums = dataset
    headers = []

    def recording(handler, body):
        headers.append(dict(handler.headers))
        fs.send(handler, body)

    with fs.Mirror(mirror, {"*": recording}) as private:
        fetch.run(dest=tmp_path / "out", mirror=private.url.replace("http://", "http://reader:s3cret%21@"),
                  checksums=str(checksums), timeout=5, retries=0)
    fetched(tmp_path / "out", checksums)
    assert len(headers) == 4
    for sent in headers:
        assert sent["User-Agent"] == "fashion-fetch"
        assert sent["Authorization"] == "Basic cmVhZGVyOnMzY3JldCE="


def test_a_source_failing_for_good_is_skipped_for_the_later_files_and_the_message_says_why(
        tmp_path, dataset, capsys):
    mirror, checksums = dataset
    expected = fetch.expected_checksums(str(checksums))
    unreachable = {}
    name = data.FILES[0]
    with fs.Mirror(mirror, {"*": fs.status(503)}) as busy, fs.Mirror(mirror, {"*": fs.status(404)}) as gone, \
            fs.Mirror(mirror) as good:
        sources = fetch.parse_sources(f"{gone.url},{busy.url},{good.url}")
        fetch.fetch_file(name, expected[name], sources, timeout=5, retries=0, max_bytes=10**6,
                         unreachable=unreachable)
        assert unreachable == {sources[1]: "HTTP 503 (1 attempt)"}
        err = [line for line in capsys.readouterr().err.splitlines() if ": " in line]
        assert err == [f"{gone.url}{name}.gz: HTTP 404 Not Found; trying the next source",
                       f"{busy.url}{name}.gz: HTTP 503 (1 attempt); trying the next source"]
        with pytest.raises(FetchError) as failed:
            fetch.fetch_file(name, expected[name], sources[:2], timeout=5, retries=0,
                             max_bytes=10**6, unreachable=unreachable)
        assert str(failed.value).splitlines()[1:3] == [
            f"  {gone.url}{name}.gz: HTTP 404 Not Found",
            f"  {busy.url}{name}.gz: skipped, unreachable for an earlier file (HTTP 503 (1 attempt))"]
        assert busy.names() == [f"{name}.gz"]
        with pytest.raises(FetchError):
            fetch.fetch_file(name, expected[name], sources[:1], timeout=5, retries=0,
                             max_bytes=10**6, unreachable=unreachable)
    # The last source's failure is in the message alone, not said twice.
    err = [line for line in capsys.readouterr().err.splitlines() if ": " in line]
    assert err == [f"{gone.url}{name}.gz: HTTP 404 Not Found; trying the next source"]


def test_the_public_mirrors_failing_point_to_a_local_copy():
    sources = fetch.parse_sources(None)
    with pytest.raises(FetchError) as failed:
        fetch.fetch_file(data.FILES[0], "0" * 64, sources, timeout=5, retries=0, max_bytes=10**6,
                         unreachable={source: "timed out (1 attempt)" for source in sources})
    assert str(failed.value).splitlines()[-1] == (
        "To use a local copy, set FASHION_MNIST_MIRROR to a directory or URL holding the four .gz files, "
        "for example /usr/share/datasets/fashion-mnist from Debian's dataset-fashion-mnist.")


def test_retries_stop_at_the_deadline(tmp_path, dataset, monkeypatch):
    monkeypatch.setattr(fetch, "BACKOFF", 0.3)
    mirror, checksums = dataset
    with fs.Mirror(mirror, {"*": fs.status(503)}) as busy:
        with pytest.raises(FetchError) as failed:
            fetch.run(dest=tmp_path / "out", mirror=busy.url, checksums=str(checksums), timeout=5,
                      retries=5, deadline=0.5)
        # At 0 and 0.3 s; the next wait, 0.6 s, ends past the deadline, and the source is given up.
        assert len(busy.requests) == 2
    assert str(failed.value).splitlines()[1] == (
        f"  {busy.url}{data.FILES[0]}.gz: too slow: 0 bytes in 1 s, past the deadline of 0.5 s per "
        "file (--deadline)")


def test_a_second_fetch_replaces_the_first_and_nothing_else(tmp_path, dataset):
    mirror, checksums = dataset
    for _ in range(2):
        fetch.run(dest=tmp_path / "out", mirror=str(mirror), checksums=str(checksums), timeout=1,
                  retries=0)
        fetched(tmp_path / "out", checksums)
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(FashionError, match="notes.txt"):
        fetch.run(dest=tmp_path / "out", mirror=str(mirror), checksums=str(checksums), timeout=1,
                  retries=0)
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def unsized(handler, body):
    """A whole body without Content-Length, ended by closing the connection."""
    handler.send_response(200)
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(body)


def why_not(source: str, name: str = data.FILES[0], **kwargs) -> str:
    """The reason fetch_file gives for `source` not delivering `name`."""
    with pytest.raises(FetchError) as failed:
        fetch.fetch_file(name, "0" * 64, fetch.parse_sources(source),
                         **{"timeout": 5, "retries": 0, "max_bytes": 10**6, "unreachable": {}, **kwargs})
    return str(failed.value).splitlines()[1].split(".gz: ", 1)[1]


def test_a_download_that_breaks_off_or_stalls_says_how(dataset):
    mirror, checksums = dataset
    name = data.FILES[0]
    expected = fetch.expected_checksums(str(checksums))[name]
    with fs.Mirror(mirror, {"*": unsized}) as plain:  # no length: whatever arrives is the whole
        assert data.sha256(fetch.fetch_file(name, expected, fetch.parse_sources(plain.url), timeout=5,
                                            retries=0, max_bytes=10**6, unreachable={})) == expected
    with fs.Mirror(mirror, {"*": fs.reset}) as broken:
        assert why_not(broken.url) == "download broke off (ConnectionResetError) (1 attempt)"
    with fs.Mirror(mirror, {"*": fs.stalled}) as stalled:
        assert why_not(stalled.url, timeout=0.3) == "timed out while downloading (1 attempt)"
    with fs.Mirror(mirror, {"*": fs.dripping}) as slow:
        assert re.fullmatch(r"too slow: [1-9]\d* bytes in 1 s, past the deadline of 0.5 s per file "
                            r"\(--deadline\)", why_not(slow.url, deadline=0.5))


def test_a_url_that_cannot_be_requested_or_whose_host_is_unknown_is_named():
    # An empty label cannot be IDNA-encoded: refused outright, not retried.
    assert why_not("http://a..b/", retries=1).startswith(
        "not a URL that can be requested (encoding with 'idna' codec failed")
    assert why_not("http://reader:s3cret@no-such-host.invalid/data/").startswith(
        "the host name no-such-host.invalid could not be resolved (")


def test_a_local_file_that_cannot_be_read_says_why(tmp_path):
    (tmp_path / "f.gz").symlink_to("/proc/self/mem")  # a regular file that reading fails on
    with pytest.raises(FetchError) as failed:
        fetch.fetch_file("f", "0" * 64, [fetch.Source(str(tmp_path), False)], timeout=1, retries=0,
                         max_bytes=10**6, unreachable={})
    assert str(failed.value).splitlines()[1] == f"  {tmp_path / 'f.gz'}: Input/output error"
