"""Writes that leave either the previous outputs or the complete new ones: never half a file, and
never some outputs of a run beside others of an earlier one."""

import contextlib
import errno
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fashion.errors import FashionError


def _clear_leftovers(path: Path) -> None:
    # A process killed with SIGKILL cannot clean up; the next write of the same output does.
    for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def json_bytes(obj) -> bytes:
    # allow_nan=False: NaN is not JSON, and DVC cannot read it back.
    return (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode()


def write_bytes(path: str | Path, data: bytes) -> None:
    with outputs() as staged:
        staged.file(path, data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | Path, obj) -> None:
    write_bytes(path, json_bytes(obj))


def _refuse_to_replace_a_holder(path: Path) -> None:
    """Replacing a directory deletes the previous one: never the working directory, this package,
    or a directory above either (`--logdir $PWD` would move a whole project away)."""
    absolute = Path(os.path.abspath(path))  # ".." resolved by name, a final symlink not followed
    target = absolute.parent.resolve() / absolute.name if absolute.name else absolute
    for held, what in ((Path.cwd().resolve(), "the working directory"),
                       (Path(__file__).resolve().parent, "this project's code")):
        if target == held or target in held.parents:
            raise FashionError(f"refusing to replace {path}: it holds {what}; give the output a "
                               "directory of its own")


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


class Outputs:
    """A stage's outputs, replaced together.

    Each output is written in full in a hidden directory beside its destination. Only when all are
    complete are they renamed into place, and a failure or an interrupt (Ctrl-C, SIGTERM) before
    the last rename puts every previous output back: a failed stage changes none of its outputs.
    """

    def __init__(self):
        self._staged: list[tuple[Path, Path]] = []  # (destination, its hidden work directory)

    def _work(self, path: Path) -> Path:
        target = Path(os.path.abspath(path))
        for other, _ in self._staged:
            other = Path(os.path.abspath(other))
            if target == other or other in target.parents or target in other.parents:
                raise FashionError(f"{path} is given for two outputs, or one holds the other; "
                                   "give each output a path of its own")
        path.parent.mkdir(parents=True, exist_ok=True)
        _clear_leftovers(path)
        # One hidden directory holds the new output and, during the swap, the previous one: an
        # interrupt between two renames can then put the previous one back, and a single
        # removal cleans up whatever happened.
        work = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
        self._staged.append((path, work))
        return work / "new"

    def file(self, path: str | Path, data: bytes) -> None:
        """Stage `data` as the new content of the file `path`."""
        path = Path(path)
        new = self._work(path)
        if path.is_dir() and not path.is_symlink():  # a mistyped path: never swap a folder away
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        # open() honours the umask, unlike mkstemp: outputs are shared files, like any other
        # the user creates.
        new.write_bytes(data)

    def directory(self, path: str | Path) -> Path:
        """An empty directory to fill with the new content of the directory `path`."""
        path = Path(path)
        _refuse_to_replace_a_holder(path)
        new = self._work(path)
        new.mkdir()  # unlike mkdtemp's private mode, honours the umask: outputs are shared
        return new

    def _replace_all(self) -> None:
        swapped = []
        try:
            for path, work in self._staged:
                swapped.append((path, work))
                if _exists(path):
                    os.replace(path, work / "old")
                os.replace(work / "new", path)
        except BaseException:
            for path, work in reversed(swapped):
                if not _exists(work / "new") and _exists(path):  # the new output is in place
                    os.replace(path, work / "new")
                if _exists(work / "old"):
                    os.replace(work / "old", path)
            raise

    def _remove_work(self) -> None:
        for _, work in self._staged:
            shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def outputs() -> Iterator[Outputs]:
    """Stage outputs in the block; they replace the previous ones together when it succeeds."""
    staged = Outputs()
    try:
        yield staged
        staged._replace_all()
    finally:
        staged._remove_work()


@contextlib.contextmanager
def staged_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty directory beside `path`; on success it replaces `path`, on failure it goes."""
    with outputs() as staged:
        yield staged.directory(path)
