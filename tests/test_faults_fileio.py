"""Interrupts at the worst moments of an output's replacement (fashion/fileio.py).

A signal cannot be aimed between two system calls from outside, so these tests raise
KeyboardInterrupt from the rename itself: the one place where the previous output has been moved
away and the new one is not yet in place.
"""

import os
import stat

import pytest

from fashion import fileio
from fashion.errors import FashionError
from tests.faults import assert_no_leftovers, snapshot


def interrupt_rename(monkeypatch, on_call: int) -> None:
    """Make the `on_call`-th os.replace in fileio raise KeyboardInterrupt instead of renaming."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append((src, dst))
        if len(calls) == on_call:
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(fileio.os, "replace", replace)


@pytest.mark.parametrize("on_call", [1, 2], ids=["moving-the-old-away", "moving-the-new-in"])
def test_an_interrupted_directory_swap_keeps_the_previous_output(tmp_path, monkeypatch, on_call):
    logdir = tmp_path / "runs/train"
    logdir.mkdir(parents=True)
    (logdir / "events").write_bytes(b"previous run")
    before = snapshot(tmp_path)
    interrupt_rename(monkeypatch, on_call)
    with pytest.raises(KeyboardInterrupt):
        with fileio.staged_dir(logdir) as staging:
            (staging / "events").write_bytes(b"new run")
    assert snapshot(tmp_path) == before
    assert_no_leftovers(tmp_path)


def test_a_failed_first_write_of_a_directory_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with fileio.staged_dir(tmp_path / "runs/train") as staging:
            (staging / "events").write_bytes(b"half")
            raise RuntimeError("stage failed")
    assert list((tmp_path / "runs").iterdir()) == []


def test_an_interrupted_file_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "models/model.pt"
    path.parent.mkdir()
    path.write_bytes(b"previous weights")
    interrupt_rename(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        fileio.write_bytes(path, b"new weights")
    assert path.read_bytes() == b"previous weights"
    assert_no_leftovers(tmp_path)


def test_leftovers_of_a_killed_run_are_removed_by_the_next_write(tmp_path):
    # SIGKILL allows no cleanup: the next write of the same output does it.
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs/.train.tmp-killed/new").mkdir(parents=True)
    (tmp_path / ".model.pt.tmp-killed").write_bytes(b"half")
    with fileio.staged_dir(tmp_path / "runs/train") as staging:
        (staging / "events").write_bytes(b"run")
    fileio.write_bytes(tmp_path / "model.pt", b"weights")
    assert_no_leftovers(tmp_path)
    assert (tmp_path / "runs/train/events").read_bytes() == b"run"


def test_outputs_get_the_mode_of_any_file_the_user_creates(tmp_path):
    # mkstemp's files are private (0600): an output shared with a group must not be.
    fileio.write_bytes(tmp_path / "metrics.json", b"{}")
    with fileio.staged_dir(tmp_path / "runs") as staging:
        (staging / "events").write_bytes(b"")
    (tmp_path / "reference").touch()
    (tmp_path / "reference-dir").mkdir()
    mode = lambda name: stat.S_IMODE((tmp_path / name).stat().st_mode)  # noqa: E731
    assert mode("metrics.json") == mode("reference")
    assert mode("runs") == mode("reference-dir")


@pytest.mark.parametrize("given", [".", "..", "{cwd}", "{cwd}/sub/..", "/", "{code}", "{code}/.."])
def test_a_directory_holding_the_working_directory_or_the_code_is_never_replaced(
        tmp_path, monkeypatch, given):
    work, code = tmp_path / "project", tmp_path / "checkout/fashion"
    for directory in (work, code):
        directory.mkdir(parents=True)
        (directory / "precious").write_bytes(b"keep")
    monkeypatch.chdir(work)
    # Where fileio takes the package to be: a stand-in, so that a broken check replaces no code.
    monkeypatch.setattr(fileio, "__file__", str(code / "fileio.py"))
    before = snapshot(tmp_path)
    with pytest.raises(FashionError, match=r"refusing to replace .*: it holds (the working "
                                           r"directory|this project's code); give the output"):
        with fileio.staged_dir(given.format(cwd=work, code=code)) as staging:
            (staging / "events").write_bytes(b"new run")
    assert snapshot(tmp_path) == before


def test_a_symlink_to_the_working_directory_is_replaced_not_followed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "logs").symlink_to(tmp_path)
    with fileio.staged_dir("logs") as staging:
        (staging / "events").write_bytes(b"new run")
    assert not (tmp_path / "logs").is_symlink()
    assert (tmp_path / "logs/events").read_bytes() == b"new run"
