"""Writes that leave either the previous output or the complete new one, never half a file."""

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fashion.errors import FashionError


def _read_umask() -> int:
    umask = os.umask(0)  # the only way to read it; done once, at import, before any thread starts
    os.umask(umask)
    return umask


# mkstemp makes its file private; outputs are shared files, like any other the user creates.
SHARED_FILE_MODE = 0o666 & ~_read_umask()


def _clear_leftovers(path: Path) -> None:
    # A process killed with SIGKILL cannot clean up; the next write of the same output does.
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_leftovers(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), SHARED_FILE_MODE)
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | Path, obj) -> None:
    # allow_nan=False: NaN is not JSON, and DVC cannot read it back.
    write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


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


@contextlib.contextmanager
def staged_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty directory beside `path`; on success it replaces `path`, on failure it goes."""
    path = Path(path)
    _refuse_to_replace_a_holder(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_leftovers(path)
    # One hidden directory holds the new output and, during the swap, the previous one: an
    # interrupt (Ctrl-C, SIGTERM) between the two renames can then put the previous one back,
    # and a single removal cleans up whatever happened.
    work = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    new, old = work / "new", work / "old"
    try:
        new.mkdir()  # unlike mkdtemp's private mode, honours the umask: outputs are shared
        yield new
        if path.exists() or path.is_symlink():
            os.replace(path, old)
        os.replace(new, path)
    except BaseException:
        if (old.exists() or old.is_symlink()) and not (path.exists() or path.is_symlink()):
            os.replace(old, path)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
