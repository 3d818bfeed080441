"""fashion/fetch.py called in this process against the loopback servers of tests/faults.py.

tests/test_faults_fetch.py runs scripts/fetch.py as a user does; these run the same module in
the test's own process, where `make mutation` can see which tests reach which function.
"""

import pytest

from fashion import data, fetch
from fashion.errors import FetchError
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
