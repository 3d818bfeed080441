"""Writes that leave either the previous outputs or the complete new ones: never half a file, and
never some outputs of a run beside others of an earlier one."""

import contextlib
import errno
import fcntl
import fnmatch
import glob
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fashion.errors import FashionError


def _locked(path: Path, blocking: bool = True) -> int | None:
    """A descriptor of `path` holding an exclusive flock on it, or None if another process holds
    one and `blocking` is false. The lock goes with the process, however it ends."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return fd
    except BlockingIOError:
        os.close(fd)
        return None


def _clear_leftovers(path: Path) -> None:
    # A process killed with SIGKILL cannot clean up; the next write of the same output does,
    # first putting back a previous directory that the kill caught moved away. A work directory
    # still locked belongs to a run in progress (two hand runs to the same paths): left alone.
    for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
        if stale.is_dir() and not stale.is_symlink():
            try:
                lock = _locked(stale, blocking=False)
            except OSError:  # gone meanwhile
                continue
            if lock is None:
                continue
            os.close(lock)
            if _exists(stale / "old") and not _exists(path):
                os.replace(stale / "old", path)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def json_bytes(obj) -> bytes:
    # allow_nan=False: NaN is not JSON, and DVC cannot read it back.
    return (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode()


def write_bytes(path: str | Path, data: bytes) -> None:
    with outputs() as staged:
        staged.file(path, data)


def _refuse_to_replace_a_holder(path: Path) -> None:
    """Replacing a directory deletes the previous one: never the working directory, this package,
    or a directory above either (`--logdir $PWD` would move a whole project away)."""
    target = _real(path)  # a final symlink not followed
    for held, what in ((Path.cwd().resolve(), "the working directory"),
                       (Path(__file__).resolve().parent, "this project's code")):
        if target == held or target in held.parents:
            raise FashionError(f"refusing to replace {path}: it holds {what}; give the output a "
                               "directory of its own")


# Whether a file, by its path relative to an output directory, is one the writer of that directory
# writes: only such files (and empty directories) may be deleted when the directory is replaced.
Holds = Callable[[PurePosixPath], bool]


def matching(*patterns: str) -> Holds:
    """The files whose relative path matches one of the fnmatch `patterns` (`*` spans `/`)."""
    return lambda relative: any(fnmatch.fnmatchcase(str(relative), p) for p in patterns)


def _refuse_to_replace_a_stranger(path: Path, holds: Holds) -> None:
    """Replacing a directory deletes the previous one, so it must be one this writer (or DVC,
    restoring it) wrote: every file in it one that `holds` accepts. Its contents say so whoever
    wrote them, unlike a marker file, which DVC-restored outputs and older baselines lack."""
    if path.is_symlink() or not path.exists():
        return  # a symlink is replaced by the directory; what it points to is not touched
    if not path.is_dir():
        raise FashionError(f"refusing to replace {path}: it is a file, and this output is a "
                           "directory; remove the file or choose another path")
    for folder, subfolders, files in os.walk(path):
        # A symlink to a directory is listed, not entered: judged, like a file, by its name.
        linked = [name for name in subfolders if os.path.islink(os.path.join(folder, name))]
        for name in sorted(files) + linked:
            relative = PurePosixPath(Path(folder, name).relative_to(path).as_posix())
            if not holds(relative):
                raise FashionError(f"refusing to replace {path}: it holds {relative}, which this "
                                   "stage does not write; choose another path, or move the "
                                   "directory's contents away first")


@contextlib.contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """Give an OSError raised in the block without a file name (a full disk, a file size limit:
    the write fails, not the open) the name of the output `path`, so the message says which."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from None


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
        self._locks: list[int] = []  # descriptors holding each work directory's flock

    def _work(self, path: Path) -> Path:
        target = _real(path)
        for other, _ in self._staged:
            other = _real(other)
            if target == other or other in target.parents or target in other.parents:
                raise FashionError(f"{path} is given for two outputs, or one holds the other; "
                                   "give each output a path of its own")
        path.parent.mkdir(parents=True, exist_ok=True)
        parent = _locked(path.parent)  # no other run clears a work directory not yet locked
        try:
            _clear_leftovers(path)
            # One hidden directory holds the new output and, during the swap, the previous one:
            # an interrupt between two renames can then put the previous one back, and a single
            # removal cleans up whatever happened.
            work = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
            self._locks.append(_locked(work))
        finally:
            os.close(parent)
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
        with naming(path):
            new.write_bytes(data)

    def directory(self, path: str | Path, holds: Holds = lambda relative: False) -> Path:
        """An empty directory to fill with the new content of the directory `path`. An existing
        `path` is replaced only if empty or if `holds` accepts every file in it."""
        path = Path(path)
        _refuse_to_replace_a_holder(path)
        _refuse_to_replace_a_stranger(path, holds)
        new = self._work(path)
        new.mkdir()  # unlike mkdtemp's private mode, honours the umask: outputs are shared
        return new

    def _replace_all(self) -> None:
        self._done: list[_Swap] = []  # what _put_back undoes
        try:
            for path, work in self._staged:
                swap = _Swap(path, work)
                self._done.append(swap)
                if _exists(path):
                    if (work / "new").is_dir():
                        os.replace(path, work / "old")  # a directory cannot be swapped in one step
                        swap.kept = "moved"
                    else:  # a file: Outputs.file refuses to replace a directory
                        swap.kept = _keep_file(path, work / "old")
                os.replace(work / "new", path)  # for a file, atomic: never missing for a reader
                swap.new_in = True
        except BaseException:
            self._put_back()
            raise

    def _put_back(self) -> None:
        for swap in reversed(self._done):
            if swap.new_in:
                os.replace(swap.path, swap.work / "new")
            if swap.kept == "moved" or (swap.kept == "linked" and swap.new_in):
                os.replace(swap.work / "old", swap.path)

    @contextlib.contextmanager
    def _parents_locked(self) -> Iterator[None]:
        """Two runs writing the same outputs swap them one after the other, not interleaved (one
        would find the output the other had just moved away). Locked in one order: no deadlock."""
        parents = sorted({_real(path).parent for path, _ in self._staged})
        locks = [_locked(parent) for parent in parents]
        try:
            yield
        finally:
            for fd in locks:
                os.close(fd)

    def _remove_work(self) -> None:
        for _, work in self._staged:
            shutil.rmtree(work, ignore_errors=True)
        for fd in self._locks:
            os.close(fd)
        self._locks.clear()


@dataclass
class _Swap:
    """One output's replacement, as far as it went."""
    path: Path
    work: Path
    kept: str | None = None  # the previous version: "linked", "moved", or None if there was none
    new_in: bool = False     # the new version is in place


def _real(path: Path) -> Path:
    """`path` with its directory's symbolic links resolved: two names of one file compare equal."""
    absolute = Path(os.path.abspath(path))
    return Path(os.path.realpath(absolute.parent)) / absolute.name


def _keep_file(path: Path, old: Path) -> str:
    """Keep the previous file (or symlink) at `old`: as a second hard link, so that `path` goes on
    naming it until the new one replaces it; moved away where the filesystem has no hard links."""
    try:
        os.link(path, old, follow_symlinks=False)
        return "linked"
    except OSError:
        os.replace(path, old)
        return "moved"


# Set by a command whose work ends once its outputs are replaced (cli.stage_command): called, with
# Ctrl-C and SIGTERM still held, the moment they all are; it decides what a later signal does.
after_outputs: Callable[[], None] | None = None
INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class _Held:
    """The signals held back so far, and whether the outputs are final."""
    received: list[int]
    # Set the moment the replacement is complete and stays: a signal held after it came too late
    # to undo anything, so it must not be reported as having stopped the stage.
    replaced: bool = False


@contextlib.contextmanager
def _signals_held() -> Iterator[_Held]:
    """Hold SIGINT and SIGTERM back while the block runs, then deliver them.

    Python runs signal handlers between two bytecodes of the main thread, so a Ctrl-C could land
    between two renames of a replacement, or between two of the renames that undo it; held, it
    arrives once every output is in a consistent state. Only the main thread may set handlers;
    elsewhere the block runs as it is. When the block marks its outputs `replaced` and
    `after_outputs` is set, the signals go to the handlers after_outputs installs instead of the
    previous ones, whether they came before the block ended or come later.
    """
    held = _Held([])
    if threading.current_thread() is not threading.main_thread():
        yield held
        return
    previous = {signum: signal.signal(signum, lambda signum, frame: held.received.append(signum))
                for signum in INTERRUPTS}
    try:
        yield held
    finally:
        if held.replaced and after_outputs is not None:
            after_outputs()
        else:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        for signum in held.received:
            signal.raise_signal(signum)


@contextlib.contextmanager
def outputs() -> Iterator[Outputs]:
    """Stage outputs in the block; they replace the previous ones together when it succeeds.

    A Ctrl-C or SIGTERM that arrives while they replace each other is held until they are all new,
    then undoes the replacement and is raised: an interrupted stage has replaced none of its
    outputs. One that arrives after that, while the work directories are removed, leaves the new
    outputs in place and goes to after_outputs' handlers where it is set.
    """
    staged = Outputs()
    try:
        yield staged
        with _signals_held() as held, staged._parents_locked():
            try:
                staged._replace_all()
                # The one moment that decides: a signal held before it undoes the replacement,
                # one after it (while the work directories go) finds the outputs new and leaves
                # them.
                if held.received:
                    staged._put_back()
                else:
                    held.replaced = True
            finally:
                staged._remove_work()
    except BaseException:
        staged._remove_work()  # also after a Ctrl-C in the instant before the signals were held
        raise


@contextlib.contextmanager
def staged_dir(path: str | Path, holds: Holds = lambda relative: False) -> Iterator[Path]:
    """Yield an empty directory beside `path`; on success it replaces `path` (see
    Outputs.directory for which `path` it may replace), on failure it goes."""
    with outputs() as staged:
        yield staged.directory(path, holds)
