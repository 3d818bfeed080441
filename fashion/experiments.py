"""Gather the TensorBoard logs of every DVC experiment into one logdir, one run per experiment.

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
    label: str  # the run name in TensorBoard: experiment name and the params it changed


def _params(revision: dict) -> dict:
    return ((revision.get("data") or {}).get("params") or {}).get("params.yaml", {}).get("data") or {}


def list_experiments(repo: Path) -> list[Experiment]:
    """The baseline commit and its finished experiments, from `dvc exp show --json`."""
    done = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=repo,
                          capture_output=True, text=True)
    if done.returncode != 0:
        # DVC ends some errors with a support footer: its ERROR line is the one that says why.
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        raise FashionError(f"`dvc exp show` failed: "
                           f"{errors[-1] if errors else f'exit status {done.returncode}'}")
    found = []
    for row in json.loads(done.stdout):
        if row.get("rev") == "workspace" or not row.get("data"):
            continue
        base = _params(row)
        found.append(Experiment(row["rev"], f"{row.get('name') or row['rev'][:7]} (baseline)"))
        for group in row.get("experiments") or []:
            # A queued, running or failed experiment has no results of its own: its commit
            # holds the baseline's dvc.lock, and so would show the baseline's logs under its name.
            # A finished one has no executor, or one in state "success".
            if (group.get("executor") or {}).get("state", "success") != "success":
                continue
            for revision in group.get("revs") or []:
                params = _params(revision)
                changed = " ".join(f"{k}={v}" for k, v in params.items() if base.get(k) != v)
                name = revision.get("name") or revision["rev"][:7]
                found.append(Experiment(revision["rev"], f"{name} ({changed or 'no change'})"))
    return found


def gather(repo: Path, out: Path) -> tuple[list[str], list[str], list[str]]:
    """Copy each experiment's runs/<stage> into out/<run name>/<stage>. Return the run names
    copied, the labels of experiments whose logs are not in the local DVC cache (a fresh clone,
    `dvc gc`), and for each experiment that could not be copied, its label and why: one bad
    experiment is left out, never the whole view."""
    # Imported here: DVC takes a second to import, and only this needs it.
    from dvc.api import DVCFileSystem
    from dvc_data.index import DataIndexError

    out.mkdir(parents=True, exist_ok=True)
    copied, uncached, failed = [], [], []
    for experiment in list_experiments(repo):
        target = out / run_name(experiment.label, set(copied))
        try:
            # Closed at once: each holds open files of the repository at its revision.
            with contextlib.closing(DVCFileSystem(str(repo), rev=experiment.rev)) as fs:
                present = [logdir for logdir in LOGDIRS if fs.exists(logdir)]  # from dvc.lock
                if not present:
                    continue  # a commit without pipeline results
                for logdir in present:
                    fs.get(logdir, str(target / Path(logdir).name), recursive=True)
        except (DataIndexError, FileNotFoundError):
            shutil.rmtree(target, ignore_errors=True)
            uncached.append(experiment.label)
            continue
        except Exception as exc:  # whatever DVC or the file system raises for this one
            shutil.rmtree(target, ignore_errors=True)
            failed.append(f"{experiment.label} ({' '.join(str(exc).split()) or type(exc).__name__})")
            continue
        copied.append(target.name)
    return copied, uncached, failed
