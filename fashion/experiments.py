"""DVC experiments as `dvc exp show` lists them, and their TensorBoard logs gathered into one logdir.

The logs of an experiment are cached DVC outputs at its revision; DVCFileSystem reads them from
the cache without checking anything out, so the user's workspace stays as it is.
"""

import contextlib
import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from fashion.errors import FashionError

LOGDIRS = ("runs/visualize", "runs/train", "runs/evaluate")
NAME_BYTES = 120  # a run's directory name at most: file systems allow 255 bytes, and it is read


def run_name(label: str, taken: set[str]) -> str:
    """A directory name for the TensorBoard run `label`: the label itself where it can be, else
    its start and a hash of the whole, so that names stay short, readable and distinct."""
    name = "".join("_" if c == "/" or not c.isprintable() else c for c in label)
    if len(name.encode()) <= NAME_BYTES and name not in taken and name not in (".", ".."):
        return name
    digest = hashlib.sha256(label.encode()).hexdigest()
    for length in range(8, len(digest) + 1):
        suffix = f"... {digest[:length]}"
        start = name.encode()[:NAME_BYTES - len(suffix)].decode(errors="ignore").rstrip()
        if start + suffix not in taken:
            return start + suffix
    raise AssertionError("two labels with one SHA-256")


@dataclass(frozen=True)
class Experiment:
    rev: str
    name: str
    params: dict  # params.yaml's values
    changed: dict  # those of them that differ from the baseline's
    metrics: dict  # metrics file -> its values
    deps: dict  # every stage dependency -> its hash: the code and data the results came from
    timestamp: str | None  # when DVC committed it (ISO 8601): not how long it trained
    baseline: bool = False

    @property
    def label(self) -> str:
        """The run name in TensorBoard and the report: experiment name and the params it changed."""
        if self.baseline:
            return f"{self.name} (baseline)"
        return f"{self.name} ({changes(self.changed) or 'no change'})"

    def metric(self, file: str, key: str):
        return (self.metrics.get(file) or {}).get(key)


def changes(params: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


@dataclass(frozen=True)
class Listing:
    finished: list[Experiment]  # the baseline commit first, then its finished experiments
    unfinished: list[str]  # names of queued, running and failed experiments
    workspace: Experiment | None = None  # the results in the workspace, committed or not


def _data(revision: dict, kind: str) -> dict:
    return (revision.get("data") or {}).get(kind) or {}


def _experiment(revision: dict, name: str, base: dict, baseline: bool = False) -> Experiment:
    params = _data(revision, "params").get("params.yaml", {}).get("data") or {}
    return Experiment(
        rev=revision["rev"], name=name, params=params,
        changed={k: v for k, v in params.items() if base.get(k) != v},
        metrics={file: entry.get("data") or {} for file, entry in _data(revision, "metrics").items()},
        deps={path: (entry or {}).get("hash") for path, entry in _data(revision, "deps").items()},
        timestamp=(revision.get("data") or {}).get("timestamp"), baseline=baseline)


def show(repo: Path) -> list[dict]:
    """`dvc exp show --json`: HEAD and its experiments, as DVC reports them."""
    done = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=repo,
                          capture_output=True, text=True)
    if done.returncode != 0:
        # DVC ends some errors with a support footer: its ERROR line is the one that says why.
        errors = [line.removeprefix("ERROR: ") for line in done.stderr.splitlines()
                  if line.startswith("ERROR")]
        raise FashionError(f"`dvc exp show` failed: "
                           f"{errors[-1] if errors else f'exit status {done.returncode}'}")
    return json.loads(done.stdout)


def load(repo: Path) -> Listing:
    """The baseline commit and its experiments, from `dvc exp show --json`."""
    finished, unfinished, workspace = [], [], None
    for row in show(repo):
        if row.get("rev") == "workspace" and row.get("data"):
            workspace = _experiment(row, "workspace", {})
        if row.get("rev") == "workspace" or not row.get("data"):
            continue
        base = _data(row, "params").get("params.yaml", {}).get("data") or {}
        finished.append(_experiment(row, row.get("name") or row["rev"][:7], base, baseline=True))
        for group in row.get("experiments") or []:
            # A queued, running or failed experiment has no results of its own: its commit
            # holds the baseline's dvc.lock, and so would show the baseline's results under its
            # name. A finished one has no executor, or one in state "success".
            for revision in group.get("revs") or []:
                name = revision.get("name") or group.get("name") or revision["rev"][:7]
                if (group.get("executor") or {}).get("state", "success") != "success":
                    unfinished.append(name)
                elif revision.get("data"):
                    finished.append(_experiment(revision, name, base))
    return Listing(finished, unfinished, workspace)


def list_experiments(repo: Path) -> list[Experiment]:
    """The baseline commit and its finished experiments."""
    return load(repo).finished


class NotCached(Exception):
    """An output of the revision is not in the local DVC cache (a fresh clone, `dvc gc`)."""


@contextlib.contextmanager
def files_at(repo: Path, rev: str):
    """The repository's files at `rev`, outputs read from the DVC cache, nothing checked out.
    Reading an output the cache lacks raises NotCached."""
    # Imported here: DVC takes a second to import, and only this needs it.
    from dvc.api import DVCFileSystem
    from dvc_data.index import DataIndexError

    # Closed at once: each holds open files of the repository at its revision.
    with contextlib.closing(DVCFileSystem(str(repo), rev=rev)) as fs:
        try:
            yield fs
        except (DataIndexError, FileNotFoundError) as exc:
            raise NotCached(str(exc)) from exc


def gather(repo: Path, out: Path) -> tuple[list[str], list[str], list[str]]:
    """Copy each experiment's runs/<stage> into out/<run name>/<stage>. Return the run names
    copied, the labels of experiments whose logs are not in the local DVC cache (a fresh clone,
    `dvc gc`), and for each experiment that could not be copied, its label and why: one bad
    experiment is left out, never the whole view."""
    out.mkdir(parents=True, exist_ok=True)
    copied, uncached, failed = [], [], []
    for experiment in list_experiments(repo):
        target = out / run_name(experiment.label, set(copied))
        try:
            with files_at(repo, experiment.rev) as fs:
                present = [logdir for logdir in LOGDIRS if fs.exists(logdir)]  # from dvc.lock
                if not present:
                    continue  # a commit without pipeline results
                for logdir in present:
                    fs.get(logdir, str(target / Path(logdir).name), recursive=True)
        except NotCached:
            shutil.rmtree(target, ignore_errors=True)
            uncached.append(experiment.label)
            continue
        except Exception as exc:  # whatever DVC or the file system raises for this one
            shutil.rmtree(target, ignore_errors=True)
            failed.append(f"{experiment.label} ({' '.join(str(exc).split()) or type(exc).__name__})")
            continue
        copied.append(target.name)
    return copied, uncached, failed
