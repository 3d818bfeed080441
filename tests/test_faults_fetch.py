"""The fetch stage against sources that fail: scripts/fetch.py run as a user runs it, against
loopback HTTP servers that refuse, hang, break off or serve the wrong bytes (tests/faults.py).

Every failure must end in one clear message and exit 1, with no traceback, and leave the data
directory the next stage reads either absent or exactly as it was.
"""

import gzip
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fashion import data
from fashion import fetch as fetch_module
from fashion.errors import FetchError
from tests import faults as fs
from tests.conftest import ROOT
from tests.faults import assert_failed, assert_no_leftovers, clean_env

pytestmark = pytest.mark.timeout(60)
SCRIPT = ROOT / "scripts/fetch.py"
LIMIT = 200_000  # --max-bytes for the oversize tests: above every synthetic file, below the faults


def fetch(tmp_path: Path, checksums: Path | None, *sources: str, args=(), env=None,
          timeout=45) -> subprocess.CompletedProcess:
    """scripts/fetch.py into tmp_path/data/fashion-mnist, with short timeouts and one retry."""
    command = [sys.executable, str(SCRIPT), "--out", str(tmp_path / "data/fashion-mnist"),
               "--timeout", "0.5", "--retries", "1", *args]
    if sources:
        command += ["--mirror", ",".join(sources)]
    if checksums is not None:
        command += ["--checksums", str(checksums)]
    return subprocess.run(command, cwd=tmp_path, env=env or clean_env(), capture_output=True,
                          text=True, timeout=timeout)


def assert_fetched(done, tmp_path: Path, checksums: Path) -> None:
    """Exit 0, and exactly the four files with the expected content, plus their manifest."""
    assert done.returncode == 0, done.stderr
    out = tmp_path / "data/fashion-mnist"
    expected = data.parse_checksums(checksums.read_text(), str(checksums))
    assert sorted(p.name for p in out.iterdir()) == sorted([*expected, data.MANIFEST])
    for name, digest in expected.items():
        assert data.sha256((out / name).read_bytes()) == digest
    assert data.parse_checksums((out / data.MANIFEST).read_text(), "manifest") == expected
    assert_no_leftovers(tmp_path)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Each file's bytes and modification time: unchanged means not even rewritten."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


@pytest.fixture
def good(dataset):
    """A well-behaved HTTP mirror of the synthetic dataset."""
    mirror, _ = dataset
    with fs.Mirror(mirror) as server:
        yield server


# --- unreachable mirrors: bounded waits, retries with backoff, then the next mirror -----------

def test_refused_connection_is_retried_then_the_next_mirror_serves(tmp_path, dataset, good):
    _, checksums = dataset
    dead = fs.closed_port_url()
    done = fetch(tmp_path, checksums, dead, good.url)
    assert_fetched(done, tmp_path, checksums)
    assert "Connection refused; retrying in 0.5 s" in done.stderr
    assert f"{dead}{data.FILES[0]}.gz: [Errno 111] Connection refused (2 attempts); trying the next" \
        in done.stderr
    assert sorted(good.names()) == sorted(f"{n}.gz" for n in data.FILES)


def test_a_hanging_mirror_times_out_is_retried_with_backoff_then_skipped(tmp_path, dataset, good):
    _, checksums = dataset
    with fs.Silent() as silent:
        start = time.monotonic()
        done = fetch(tmp_path, checksums, silent.url, good.url)
        elapsed = time.monotonic() - start
        connections = list(silent.connections)
    assert_fetched(done, tmp_path, checksums)
    assert "timed out (2 attempts); trying the next source" in done.stderr
    # --retries 1: two connections for the first file, 0.5 s timeout + 0.5 s backoff apart; the
    # later files skip the dead mirror instead of waiting for it again.
    assert len(connections) == 2
    assert connections[1] - connections[0] >= 0.5 + 0.5 - 0.05
    assert elapsed < 15
    assert sorted(good.names()) == sorted(f"{n}.gz" for n in data.FILES)


@pytest.mark.parametrize("code", [503, 500, 429])  # 429: Too Many Requests, to be waited out
def test_server_errors_are_retried_with_doubling_backoff(tmp_path, dataset, good, code):
    _, checksums = dataset
    with fs.Mirror(tmp_path, {"*": fs.status(code)}) as busy:
        done = fetch(tmp_path, checksums, busy.url, good.url, args=["--retries", "2"])
        times = [t for t, _ in busy.requests]
    assert_fetched(done, tmp_path, checksums)
    assert len(times) == 3  # one try and two retries, for the first file only
    assert times[1] - times[0] >= 0.5 - 0.05 and times[2] - times[1] >= 1.0 - 0.05
    assert f"HTTP {code}; retrying in 0.5 s" in done.stderr and "retrying in 1 s" in done.stderr


def test_when_every_mirror_given_fails_the_message_lists_them_and_what_they_should_be(
        tmp_path, dataset):
    _, checksums = dataset
    dead = fs.closed_port_url()
    with fs.Silent() as silent:
        start = time.monotonic()
        done = fetch(tmp_path, checksums, dead, silent.url)
        elapsed = time.monotonic() - start
    assert_failed(done, f"Error: no source delivered a verified {data.FILES[0]}.gz; tried:",
                  f"  {dead}{data.FILES[0]}.gz: [Errno 111] Connection refused (2 attempts)",
                  f"  {silent.url}{data.FILES[0]}.gz: timed out (2 attempts)",
                  "Check FASHION_MNIST_MIRROR (or --mirror): each source should be a directory or "
                  "URL holding the four .gz files, for example /usr/share/datasets/fashion-mnist")
    assert "To use a local copy" not in done.stderr
    assert elapsed < 15
    assert not (tmp_path / "data/fashion-mnist").exists()
    assert_no_leftovers(tmp_path)


def test_when_the_default_mirrors_fail_the_message_says_how_to_use_a_local_copy():
    defaults = fetch_module.parse_sources(None)
    # Marked unreachable for an earlier file, they are skipped: the test needs no network.
    with pytest.raises(FetchError) as failed:
        fetch_module.fetch_file(data.FILES[0], "0" * 64, defaults, timeout=0.5, retries=0,
                                max_bytes=LIMIT, unreachable=dict.fromkeys(defaults, "offline"))
    assert str(failed.value).endswith(
        "\nTo use a local copy, set FASHION_MNIST_MIRROR to a directory or URL holding the four "
        ".gz files, for example /usr/share/datasets/fashion-mnist from Debian's "
        "dataset-fashion-mnist.")


# --- bad bytes: rejected, and the next mirror's good copy fetched and verified ----------------

@pytest.mark.parametrize("fault, reason", [
    (fs.html_error_page,
     "not gzip data (it starts with b'<!DOCTYPE html><html><bo'); an HTML page: is the URL right?"),
    (fs.not_gzip, "not gzip data"),
    (fs.truncated, "truncated gzip data"),
    (fs.wrong_content, "content has SHA-256"),
    (fs.status(404), "HTTP 404 Not Found"),
    (fs.interrupted, "download broke off after"),
    (fs.stalled, "timed out while downloading"),
], ids=["html-page-200", "not-gzip", "truncated", "wrong-checksum", "404", "interrupted", "stalled"])
def test_a_bad_file_is_rejected_and_the_next_mirror_used(tmp_path, dataset, good, fault, reason):
    mirror, checksums = dataset
    with fs.Mirror(mirror, {"*": fault}) as bad:
        done = fetch(tmp_path, checksums, bad.url, good.url)
    assert_fetched(done, tmp_path, checksums)
    assert f"{bad.url}{data.FILES[0]}.gz: {reason}" in done.stderr
    assert "trying the next source" in done.stderr
    assert sorted(good.names()) == sorted(f"{n}.gz" for n in data.FILES)


def test_a_bad_last_file_leaves_no_dataset_and_no_partial_files(tmp_path, dataset):
    # The first three files are verified and staged before the fourth breaks off: none of them
    # may reach the data directory.
    mirror, checksums = dataset
    with fs.Mirror(mirror, {f"{data.FILES[-1]}.gz": fs.interrupted}) as bad:
        done = fetch(tmp_path, checksums, bad.url)
    assert_failed(done, f"no source delivered a verified {data.FILES[-1]}.gz",
                  "download broke off after")
    assert sorted(bad.names()) == sorted(f"{n}.gz" for n in data.FILES + data.FILES[-1:])  # one retry
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == []
    assert_no_leftovers(tmp_path)


def test_a_failed_fetch_leaves_the_previous_copy_unchanged(tmp_path, dataset):
    mirror, checksums = dataset
    assert_fetched(fetch(tmp_path, checksums, str(mirror)), tmp_path, checksums)
    before = snapshot(tmp_path / "data/fashion-mnist")
    with fs.Mirror(mirror, {f"{data.FILES[-1]}.gz": fs.interrupted}) as bad:
        done = fetch(tmp_path, checksums, bad.url)
    assert_failed(done, "download broke off after")
    assert snapshot(tmp_path / "data/fashion-mnist") == before
    assert_no_leftovers(tmp_path)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_fetch_keeps_the_previous_copy(tmp_path, dataset, signum, code):
    mirror, checksums = dataset
    assert_fetched(fetch(tmp_path, checksums, str(mirror)), tmp_path, checksums)
    before = snapshot(tmp_path / "data/fashion-mnist")
    with fs.Mirror(mirror, {f"{data.FILES[-1]}.gz": fs.stalled}) as slow:
        process = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--out", str(tmp_path / "data/fashion-mnist"),
             "--mirror", slow.url, "--checksums", str(checksums), "--timeout", "20"],
            cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while f"{data.FILES[-1]}.gz" not in slow.names() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # the download of the last file is under way, three are staged
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=20)
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert_failed(done, "this stage replaced none of its outputs", code=code)
    assert snapshot(tmp_path / "data/fashion-mnist") == before
    assert_no_leftovers(tmp_path)


# --- oversized responses are cut off -----------------------------------------------------------

@pytest.mark.parametrize("fault, reason", [
    (fs.declares_huge, f"serves {2**40} bytes, more than the limit of {LIMIT}"),
    (fs.endless_chunked, f"sent more than the limit of {LIMIT} bytes; cut off"),
    (fs.endless_unsized, f"sent more than the limit of {LIMIT} bytes; cut off"),
    (fs.gzip_bomb(4 * LIMIT), f"decompresses to more than the limit of {LIMIT} bytes"),
], ids=["content-length", "chunked", "no-length", "gzip-bomb"])
def test_an_oversized_response_is_cut_off(tmp_path, dataset, good, fault, reason):
    mirror, checksums = dataset
    with fs.Mirror(mirror, {f"{data.FILES[0]}.gz": fault}) as big:
        done = fetch(tmp_path, checksums, big.url, good.url, args=["--max-bytes", str(LIMIT)])
        sent = big.sent
    assert_fetched(done, tmp_path, checksums)
    assert f"{big.url}{data.FILES[0]}.gz: {reason}" in done.stderr
    # The client hung up near the limit; the server did not get to send its whole stream. Socket
    # buffers on both ends hold a few MB at most.
    assert sent < 16 * 2**20 < fs.ENDLESS_CAP


def test_an_oversized_local_file_is_skipped_for_the_next_source(tmp_path, dataset, good):
    mirror, checksums = dataset
    big = tmp_path / "big"
    shutil.copytree(mirror, big)
    (big / f"{data.FILES[0]}.gz").write_bytes(b"\0" * (LIMIT + 1))
    done = fetch(tmp_path, checksums, str(big), good.url, args=["--max-bytes", str(LIMIT)])
    assert_fetched(done, tmp_path, checksums)
    assert f"{big / data.FILES[0]}.gz: larger than the limit of {LIMIT} bytes" in done.stderr
    assert good.names() == [f"{data.FILES[0]}.gz"]  # the others came from the directory


# --- which sources are accepted ----------------------------------------------------------------

@pytest.mark.parametrize("source", ["ftp://example.com/fashion/", "s3://bucket/fashion",
                                    "http://[::1/", "http://127.0.0.1:99999/", "https:///fashion/",
                                    "file://usr/share/datasets/fashion-mnist"])
def test_unsupported_or_malformed_sources_are_refused_in_one_line(tmp_path, dataset, source):
    _, checksums = dataset
    done = fetch(tmp_path, checksums, source)
    assert_failed(done, f"Error: mirror {source!r}")
    assert "FASHION_MNIST_MIRROR (or --mirror) takes" in done.stderr or "file:///path" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("location, reason", [
    # Our redirect handler refuses ftp (urllib would follow it); urllib itself refuses file.
    ("ftp://127.0.0.1/{name}", "redirected to ftp://127.0.0.1/{name}, which is not http(s)"),
    ("file:///etc/{name}", "Redirection to url 'file:///etc/{name}' is not allowed"),
], ids=["ftp", "file"])
def test_a_redirect_away_from_http_is_refused(tmp_path, dataset, good, location, reason):
    mirror, checksums = dataset
    with fs.Mirror(mirror, {"*": fs.redirect(location)}) as sly:
        done = fetch(tmp_path, checksums, sly.url, good.url)
    assert_fetched(done, tmp_path, checksums)
    name = f"{data.FILES[0]}.gz"
    assert f"{sly.url}{name}: " in done.stderr and reason.format(name=name) in done.stderr


def test_a_mirror_path_with_spaces_and_non_ascii_letters_is_percent_encoded(tmp_path, dataset,
                                                                             good):
    mirror, checksums = dataset
    assert_fetched(fetch(tmp_path, checksums, good.url + "Fashion MNIST/dätä"), tmp_path, checksums)


def test_a_redirect_to_another_http_mirror_is_followed(tmp_path, dataset, good):
    mirror, checksums = dataset
    with fs.Mirror(mirror, {"*": fs.redirect(good.url + "{name}")}) as moved:
        done = fetch(tmp_path, checksums, moved.url)
    assert_fetched(done, tmp_path, checksums)
    assert sorted(moved.names()) == sorted(good.names()) == sorted(f"{n}.gz" for n in data.FILES)


def test_file_urls_directories_and_the_environment_variables_work(tmp_path, dataset):
    mirror, checksums = dataset
    done = fetch(tmp_path, checksums, mirror.as_uri())
    assert_fetched(done, tmp_path, checksums)
    # A missing directory first, then the real one, both given through the environment.
    env = clean_env(FASHION_MNIST_MIRROR=f"{tmp_path / 'absent'},{mirror}",
                    FASHION_MNIST_CHECKSUMS=str(checksums))
    done = fetch(tmp_path, None, env=env)
    assert_fetched(done, tmp_path, checksums)
    assert f"{tmp_path / 'absent' / data.FILES[0]}.gz: no such file; trying the next source" in done.stderr


def test_multi_member_gzip_files_are_read_whole(tmp_path, dataset):
    # As bgzip or `cat a.gz b.gz` write them; gzip -d reads them as one file.
    mirror, checksums = dataset
    split = tmp_path / "split"
    split.mkdir()
    for name in data.FILES:
        content = gzip.decompress((mirror / f"{name}.gz").read_bytes())
        middle = len(content) // 2
        (split / f"{name}.gz").write_bytes(gzip.compress(content[:middle], mtime=0)
                                           + gzip.compress(content[middle:], mtime=0) + b"\0" * 8)
    assert_fetched(fetch(tmp_path, checksums, str(split)), tmp_path, checksums)


def test_garbage_after_the_gzip_data_is_rejected(tmp_path, dataset):
    mirror, checksums = dataset
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in data.FILES:
        (bad / f"{name}.gz").write_bytes((mirror / f"{name}.gz").read_bytes() + b"<html>")
    done = fetch(tmp_path, checksums, str(bad))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"{bad / data.FILES[0]}.gz: data after the gzip data is not gzip" in done.stderr


def test_a_checksum_file_lacking_a_file_is_one_line_before_any_download(tmp_path, dataset, good):
    mirror, checksums = dataset
    partial = tmp_path / "partial.sha256"
    partial.write_text("".join(f"{line}\n" for line in checksums.read_text().splitlines()
                               if not line.endswith("t10k-labels-idx1-ubyte")))
    done = fetch(tmp_path, partial, good.url)
    assert_failed(done, f"Error: FASHION_MNIST_CHECKSUMS: {partial} lists no checksum for "
                        "t10k-labels-idx1-ubyte")
    assert good.names() == [] and not (tmp_path / "data").exists()


def test_a_missing_or_binary_checksum_file_is_one_line(tmp_path, dataset):
    mirror, _ = dataset
    done = fetch(tmp_path, tmp_path / "absent.sha256", str(mirror))
    assert_failed(done, f"Error: FASHION_MNIST_CHECKSUMS: cannot read {tmp_path / 'absent.sha256'}")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    done = fetch(tmp_path, mirror / f"{data.FILES[0]}.gz", str(mirror))  # the wrong file, given by mistake
    assert_failed(done, f"{data.FILES[0]}.gz is not a sha256sum-format text file")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "data").exists()



# --- credentials in a mirror URL ----------------------------------------------------------------

def needs_basic_auth(user: str, password: str) -> fs.Fault:
    import base64

    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def fault(handler, body):
        if handler.headers.get("Authorization") != expected:
            fs.send(handler, b"", status=401)
        else:
            fs.send(handler, body)
    return fault


def test_credentials_in_a_mirror_url_are_sent_and_never_printed(tmp_path, dataset):
    mirror, checksums = dataset
    dead = fs.closed_port_url().replace("http://", "http://reader:s3cret%21@")
    with fs.Mirror(mirror, {"*": needs_basic_auth("reader", "s3cret!")}) as private:
        url = private.url.replace("http://", "http://reader:s3cret%21@")
        done = fetch(tmp_path, checksums, dead, url)
    assert_fetched(done, tmp_path, checksums)
    assert "s3cret" not in done.stderr and "reader" not in done.stderr, done.stderr
    assert f"http://***@127.0.0.1:{dead.split(':')[-1].split('/')[0]}/data/" in done.stderr


def test_an_unresolvable_host_is_named_and_its_password_is_not(tmp_path, dataset):
    _, checksums = dataset
    done = fetch(tmp_path, checksums, "http://reader:s3cret@no-such-host.invalid/data/",
                 args=["--retries", "0"])
    assert_failed(done, "http://***@no-such-host.invalid/data/",
                  "the host name no-such-host.invalid could not be resolved")
    assert "s3cret" not in done.stderr and "reader" not in done.stderr, done.stderr


@pytest.mark.parametrize("source", [
    "ftp://reader:s3cret@example.com/", "http://reader:s3cret@[::1/",
    # Typed without percent-encoding: an @ in the password, then a port out of range; a / in
    # it, which ends the host early; a / after digits, which reads as a host and port.
    "http://reader:s3@cret@127.0.0.1:99999/", "http://reader:s3/cret@127.0.0.1/",
    "http://reader:1234/s3cret@127.0.0.1:9/",
], ids=["ftp", "bad-host", "at-and-bad-port", "slash", "slash-after-digits"])
def test_a_refused_mirror_is_shown_without_its_password(tmp_path, dataset, source):
    _, checksums = dataset
    done = fetch(tmp_path, checksums, source)
    assert_failed(done, "Error: mirror '")
    assert "cret" not in done.stderr and "reader" not in done.stderr, done.stderr
    assert "***@" in done.stderr, done.stderr


# --- a source too slow overall ------------------------------------------------------------------

@pytest.mark.parametrize("fault", [fs.dripping, fs.dripping_headers], ids=["body", "headers"])
def test_a_dripping_mirror_is_given_up_at_the_deadline_for_the_next(tmp_path, dataset, good,
                                                                      fault):
    _, checksums = dataset
    mirror, _ = dataset
    with fs.Mirror(mirror, {"*": fault}) as slow:
        start = time.monotonic()
        done = fetch(tmp_path, checksums, slow.url, good.url, args=["--deadline", "2"])
        elapsed = time.monotonic() - start
        requests = slow.names()
    assert_fetched(done, tmp_path, checksums)
    assert f"{slow.url}{data.FILES[0]}.gz: too slow: " in done.stderr
    assert "past the deadline of 2 s per file (--deadline); trying the next source" in done.stderr
    assert requests == [f"{data.FILES[0]}.gz"]  # not retried, and skipped for the other files
    assert elapsed < 2 + 0.5 + 10  # the deadline, a read's --timeout, and the good downloads


def test_the_deadline_can_be_set_in_the_environment(tmp_path, dataset):
    mirror, checksums = dataset
    with fs.Mirror(mirror, {"*": fs.dripping}) as slow:
        done = fetch(tmp_path, checksums, slow.url, env=clean_env(FASHION_MNIST_DEADLINE="1"))
    assert_failed(done, "past the deadline of 1 s per file")
