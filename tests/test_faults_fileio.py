"""Interrupts at the worst moments of an output's replacement (fashion/fileio.py).

A signal cannot be aimed between two system calls from outside, so these tests raise
KeyboardInterrupt from the rename itself: the one place where the previous output has been moved
away and the new one is not yet in place.
"""

import errno
import fcntl
import itertools
import os
import signal
import stat
import threading

import pytest

from fashion import fileio
from fashion.errors import FashionError
from tests.faults import assert_no_leftovers, snapshot

EVENTS = fileio.matching("*events")  # what the logdirs of these tests hold


def before_renames(monkeypatch, action) -> None:
    """Call action(n) before the n-th os.replace in fileio (from 1); if it raises, no rename."""
    real, calls = os.replace, itertools.count(1)

    def replace(src, dst):
        action(next(calls))
        real(src, dst)

    monkeypatch.setattr(fileio.os, "replace", replace)


def interrupt_rename(monkeypatch, on_call: int) -> None:
    """Make the `on_call`-th os.replace in fileio raise KeyboardInterrupt instead of renaming."""
    def interrupt(call):
        if call == on_call:
            raise KeyboardInterrupt

    before_renames(monkeypatch, interrupt)


@pytest.mark.parametrize("on_call", [1, 2], ids=["moving-the-old-away", "moving-the-new-in"])
def test_an_interrupted_directory_swap_keeps_the_previous_output(tmp_path, monkeypatch, on_call):
    logdir = tmp_path / "runs/train"
    logdir.mkdir(parents=True)
    (logdir / "events").write_bytes(b"previous run")
    before = snapshot(tmp_path)
    interrupt_rename(monkeypatch, on_call)
    with pytest.raises(KeyboardInterrupt):
        with fileio.staged_dir(logdir, EVENTS) as staging:
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


def stage_two_outputs(tmp_path, fail: bool = False) -> None:
    with fileio.outputs() as staged:
        staged.file(tmp_path / "models/model.pt", b"new weights")
        (staged.directory(tmp_path / "runs/train", EVENTS) / "events").write_bytes(b"new run")
        if fail:
            raise RuntimeError("the stage failed after staging its outputs")
        staged.file(tmp_path / "metrics.json", b"{}")


def test_a_stage_failing_before_its_outputs_are_complete_changes_none(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models/model.pt").write_bytes(b"previous weights")
    (tmp_path / "runs/train").mkdir(parents=True)
    (tmp_path / "runs/train/events").write_bytes(b"previous run")
    before = snapshot(tmp_path)
    with pytest.raises(RuntimeError):
        stage_two_outputs(tmp_path, fail=True)
    assert snapshot(tmp_path) == before
    assert_no_leftovers(tmp_path)


def signal_during_renames(monkeypatch, on_calls) -> None:
    """Deliver a real SIGINT to this process just before each of the `on_calls`-th os.replace."""
    def deliver(call):
        if call in on_calls:
            signal.raise_signal(signal.SIGINT)

    before_renames(monkeypatch, deliver)


def previous_logdir_and_metrics(tmp_path) -> dict:
    """Previous versions of two of stage_two_outputs' outputs; the tree's snapshot."""
    (tmp_path / "runs/train").mkdir(parents=True)
    (tmp_path / "runs/train/events").write_bytes(b"previous run")
    (tmp_path / "metrics.json").write_bytes(b'{"previous": 1}')
    return snapshot(tmp_path)


# Renames in order: the model in (it has no previous version), the previous logdir away, the new
# logdir in, the new metrics over the previous ones (kept as a second hard link). An interrupt is
# raised inside a rename, or Ctrl-C arrives before some: held until the outputs are consistent,
# then the replacement is undone and Ctrl-C raised.
@pytest.mark.parametrize("how, calls", [
    *[("raised", {n}) for n in (1, 2, 3, 4)],
    *[("ctrl-c", calls) for calls in ({1}, {2}, {3}, {4}, {2, 3}, {4, 5, 6})],
], ids=["raised-1", "raised-2", "raised-3", "raised-4", "ctrl-c-1", "ctrl-c-2", "ctrl-c-3",
        "ctrl-c-4", "ctrl-c-2-and-3", "ctrl-c-4-and-while-undoing"])
def test_an_interrupt_while_outputs_replace_each_other_puts_every_previous_one_back(
        tmp_path, monkeypatch, how, calls):
    before = previous_logdir_and_metrics(tmp_path)
    if how == "raised":
        interrupt_rename(monkeypatch, *calls)
    else:
        signal_during_renames(monkeypatch, calls)
    with pytest.raises(KeyboardInterrupt):
        stage_two_outputs(tmp_path)
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "models/model.pt").exists()
    assert_no_leftovers(tmp_path)


def test_a_file_being_replaced_is_never_missing(tmp_path, monkeypatch):
    (tmp_path / "metrics.json").write_bytes(b'{"previous": 1}')
    present = []
    before_renames(monkeypatch, lambda call: present.append((tmp_path / "metrics.json").exists()))
    stage_two_outputs(tmp_path)
    assert present and all(present)
    assert (tmp_path / "metrics.json").read_bytes() == b"{}"


def test_a_directory_a_killed_swap_left_moved_away_is_put_back_by_the_next_write(tmp_path):
    # SIGKILL between moving the previous logdir away and moving the new one in.
    (tmp_path / "runs/.train.tmp-killed/old").mkdir(parents=True)
    (tmp_path / "runs/.train.tmp-killed/old/events").write_bytes(b"previous run")
    (tmp_path / "runs/.train.tmp-killed/new").mkdir()
    with pytest.raises(RuntimeError):
        with fileio.staged_dir(tmp_path / "runs/train"):
            raise RuntimeError("this run fails too")
    assert snapshot(tmp_path) == {"runs/train/events": b"previous run"}
    assert_no_leftovers(tmp_path)


def test_a_leftover_previous_directory_is_dropped_when_the_output_was_written_since(tmp_path):
    # A kill left an older logdir moved away, and a later run wrote the output anew by hand (or a
    # `dvc checkout` restored it): the newer output stays, and the older one is not put back.
    (tmp_path / "runs/.train.tmp-killed/old").mkdir(parents=True)
    (tmp_path / "runs/.train.tmp-killed/old/events").write_bytes(b"older run")
    (tmp_path / "runs/train").mkdir()
    (tmp_path / "runs/train/events").write_bytes(b"newer run")
    with pytest.raises(RuntimeError):
        with fileio.staged_dir(tmp_path / "runs/train", fileio.matching("events")):
            raise RuntimeError("this run fails")
    assert snapshot(tmp_path) == {"runs/train/events": b"newer run"}
    assert_no_leftovers(tmp_path)
    with fileio.staged_dir(tmp_path / "runs/train", fileio.matching("events")) as staging:
        (staging / "events").write_bytes(b"this run")
    assert snapshot(tmp_path) == {"runs/train/events": b"this run"}


def test_two_names_of_one_output_are_refused(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    with pytest.raises(FashionError, match=f"^{tmp_path / 'alias/metrics.json'} is given for two "
                                           "outputs, or one holds the other; give each output a "
                                           "path of its own$"):
        with fileio.outputs() as staged:
            staged.file(tmp_path / "real/metrics.json", b"{}")
            staged.file(tmp_path / "alias/metrics.json", b"{}")
    assert snapshot(tmp_path / "real") == {}
    assert_no_leftovers(tmp_path)


def test_outputs_all_replaced_on_success(tmp_path):
    (tmp_path / "runs/train").mkdir(parents=True)
    (tmp_path / "runs/train/stale-events").write_bytes(b"previous run")
    stage_two_outputs(tmp_path)
    assert snapshot(tmp_path) == {"models/model.pt": b"new weights",
                                  "runs/train/events": b"new run", "metrics.json": b"{}"}


@pytest.mark.parametrize("first, second", [("metrics.json", "metrics.json"),
                                           ("runs", "runs/train"), ("runs/train", "runs")])
def test_outputs_that_overlap_are_refused(tmp_path, first, second):
    with pytest.raises(FashionError, match="is given for two outputs, or one holds the other"):
        with fileio.outputs() as staged:
            staged.directory(tmp_path / first)
            staged.file(tmp_path / second, b"x")
    assert snapshot(tmp_path) == {}
    assert_no_leftovers(tmp_path)


def test_a_file_output_never_replaces_a_directory(tmp_path):
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots/confusion.csv").write_bytes(b"kept")
    with pytest.raises(IsADirectoryError):
        fileio.write_bytes(tmp_path / "plots", b"{}")
    assert snapshot(tmp_path) == {"plots/confusion.csv": b"kept"}
    assert_no_leftovers(tmp_path)


def test_leftovers_are_matched_by_the_output_name_taken_literally(tmp_path):
    (tmp_path / ".run[1].json.tmp-killed").write_bytes(b"half")
    (tmp_path / ".run1.json.tmp-another-output").write_bytes(b"in progress")
    fileio.write_bytes(tmp_path / "run[1].json", b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run1.json.tmp-another-output",
                                                          "run[1].json"]


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
    with pytest.raises(FashionError, match=r"^refusing to replace .*: it holds (the working "
                                           r"directory|this project's code); give the output a "
                                           r"directory of its own$"):
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


@pytest.mark.parametrize("foreign", ["thesis.tex", "sub/.bashrc", "runs/notes.txt"])
def test_a_directory_holding_files_the_writer_does_not_write_is_refused_untouched(tmp_path, foreign):
    logdir = tmp_path / "logs"
    (logdir / foreign).parent.mkdir(parents=True, exist_ok=True)
    (logdir / foreign).write_bytes(b"someone's work")
    (logdir / "events").write_bytes(b"a previous run")
    before = snapshot(tmp_path)
    with pytest.raises(FashionError, match=rf"^refusing to replace {logdir}: it holds {foreign}, "
                                           "which this stage does not write; choose another path, "
                                           "or move the directory's contents away first$"):
        with fileio.staged_dir(logdir, EVENTS) as staging:
            (staging / "events").write_bytes(b"new run")
    assert snapshot(tmp_path) == before
    assert_no_leftovers(tmp_path)


def test_a_file_where_a_directory_output_goes_is_refused_untouched(tmp_path):
    (tmp_path / ".bashrc").write_bytes(b"alias ll='ls -l'")
    with pytest.raises(FashionError, match=f"^refusing to replace {tmp_path / '.bashrc'}: it is a "
                                           "file, and this output is a directory; remove the file "
                                           "or choose another path$"):
        with fileio.staged_dir(tmp_path / ".bashrc", EVENTS):
            pass
    assert snapshot(tmp_path) == {".bashrc": b"alias ll='ls -l'"}
    assert_no_leftovers(tmp_path)


def test_an_empty_directory_or_one_of_the_writer_s_own_files_is_replaced(tmp_path):
    (tmp_path / "empty/sub").mkdir(parents=True)
    (tmp_path / "own/sub").mkdir(parents=True)
    (tmp_path / "own/sub/old-events").write_bytes(b"previous run")
    for path in ("empty", "own"):
        with fileio.staged_dir(tmp_path / path, EVENTS) as staging:
            (staging / "events").write_bytes(b"new run")
    assert snapshot(tmp_path) == {"empty/events": b"new run", "own/events": b"new run"}


def test_two_runs_writing_the_same_outputs_at_once_both_succeed(tmp_path):
    # A second run (here the same process: flock tells apart two opens of one directory) starts
    # and finishes while the first is still staging: it must not clear the first's work as a
    # killed run's leftovers.
    with fileio.outputs() as first:
        (first.directory(tmp_path / "runs/evaluate", EVENTS) / "events").write_bytes(b"first")
        first.file(tmp_path / "metrics.json", b"first")
        with fileio.outputs() as second:
            (second.directory(tmp_path / "runs/evaluate", EVENTS) / "events").write_bytes(b"second")
            second.file(tmp_path / "metrics.json", b"second")
    assert snapshot(tmp_path) == {"runs/evaluate/events": b"first", "metrics.json": b"first"}


def test_a_symlink_output_put_back_after_an_interrupt_is_the_symlink_itself(tmp_path, monkeypatch):
    (tmp_path / "real.pt").write_bytes(b"previous weights")
    (tmp_path / "model.pt").symlink_to("real.pt")
    interrupt_rename(monkeypatch, 2)  # moving the second output in, after the first is in
    with pytest.raises(KeyboardInterrupt):
        with fileio.outputs() as staged:
            staged.file(tmp_path / "model.pt", b"new weights")
            staged.file(tmp_path / "metrics.json", b"{}")
    assert (tmp_path / "model.pt").is_symlink() and os.readlink(tmp_path / "model.pt") == "real.pt"
    assert snapshot(tmp_path) == {"model.pt": b"previous weights", "real.pt": b"previous weights"}
    assert_no_leftovers(tmp_path)


def refuse_hard_links(monkeypatch) -> None:
    """A filesystem without hard links, as some network and FAT filesystems are."""
    def link(*args, **kwargs):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(fileio.os, "link", link)


def test_without_hard_links_a_file_is_replaced_and_put_back_by_moving(tmp_path, monkeypatch):
    (tmp_path / "model.pt").write_bytes(b"previous weights")
    refuse_hard_links(monkeypatch)
    fileio.write_bytes(tmp_path / "model.pt", b"new weights")
    assert snapshot(tmp_path) == {"model.pt": b"new weights"}
    # Renames: the previous file away, the new one in, then the second output in: interrupted.
    interrupt_rename(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        with fileio.outputs() as staged:
            staged.file(tmp_path / "model.pt", b"newer weights")
            staged.file(tmp_path / "metrics.json", b"{}")
    assert snapshot(tmp_path) == {"model.pt": b"new weights"}
    assert_no_leftovers(tmp_path)


def test_a_symlink_to_a_directory_inside_an_output_is_judged_by_its_name(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere/events").write_bytes(b"not this writer's")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs/shared").symlink_to(tmp_path / "elsewhere")
    before = snapshot(tmp_path)
    with pytest.raises(FashionError, match="it holds shared, which this stage does not write"):
        with fileio.staged_dir(tmp_path / "logs", EVENTS) as staging:
            (staging / "events").write_bytes(b"new run")
    assert snapshot(tmp_path) == before


def test_outputs_are_staged_beside_their_destination_whose_folders_are_made(tmp_path):
    with fileio.outputs() as staged:
        staged.file(tmp_path / "a/b/metrics.json", b"{}")
        # Beside it, under a name the next write recognises as its own leftover.
        assert [p.name.startswith(".metrics.json.tmp-") for p in (tmp_path / "a/b").iterdir()] == [True]
    assert snapshot(tmp_path) == {"a/b/metrics.json": b"{}"}


def test_json_outputs_are_indented_end_in_a_newline_and_refuse_nan():
    assert fileio.json_bytes({"loss": 0.5, "steps": [1, 2]}) == (
        b'{\n  "loss": 0.5,\n  "steps": [\n    1,\n    2\n  ]\n}\n')
    with pytest.raises(ValueError):
        fileio.json_bytes({"loss": float("nan")})


def test_a_write_waits_for_another_run_swapping_in_the_same_folder(tmp_path):
    (tmp_path / "out").mkdir()
    held = os.open(tmp_path / "out", os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(held, fcntl.LOCK_EX)  # as another run's swap holds it
    errors = []

    def write():
        try:
            fileio.write_bytes(tmp_path / "out/metrics.json", b"{}")
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    writer.join(0.5)
    assert writer.is_alive() and not (tmp_path / "out/metrics.json").exists()
    os.close(held)
    writer.join(5)
    assert not errors and (tmp_path / "out/metrics.json").read_bytes() == b"{}"


def test_leftovers_are_cleared_around_a_run_still_in_progress(tmp_path):
    locks = []
    for name in ("a", "b", "c", "d", "e"):
        (tmp_path / f".metrics.json.tmp-{name}").mkdir()
        if name in ("a", "e"):  # two runs in progress, first and last made
            locks.append(os.open(tmp_path / f".metrics.json.tmp-{name}", os.O_RDONLY))
            fcntl.flock(locks[-1], fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        fileio.write_bytes(tmp_path / "metrics.json", b"{}")
    finally:
        for fd in locks:
            os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".metrics.json.tmp-a", ".metrics.json.tmp-e", "metrics.json"]
