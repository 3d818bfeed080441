"""A sweep as one grid of params, one DVC experiment per grid point, on as many machines as there
are tasks: each task pulls, runs its point with `dvc exp run -S`, and pushes the experiment to the
git remote (and its outputs to the DVC remote). Any scheduler that numbers its tasks can run it.

The grid is written the way `dvc exp run --queue -S lr=0.01,0.1` writes a sweep: one KEY=V1,V2,...
per param, every combination in order, the last key varying fastest. Task N runs point N and names
its experiment PREFIX-N, so that every machine agrees on the names without talking to the others.
"""

import contextlib
import itertools
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML, YAMLError

from fashion import params
from fashion.errors import FashionError

# Where the schedulers put the task's number: SLURM job arrays, Kubernetes Indexed Jobs.
INDEX_VARIABLES = ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")


@dataclass(frozen=True)
class Point:
    index: int
    name: str
    assignments: tuple[str, ...]  # KEY=VALUE, as `dvc exp run -S` takes them

    def __str__(self) -> str:
        return f"task {self.index}: {self.name} ({' '.join(self.assignments)})"


def grid(specs: tuple[str, ...], prefix: str) -> list[Point]:
    """Every point of the grid that the KEY=V1,V2,... specs span, in task order."""
    if not specs:
        raise FashionError("no grid: give one -S KEY=V1,V2,... per param to sweep")
    axes = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        key, values = key.strip(), [value.strip() for value in values.split(",")]
        if not sep or not key or "" in values:
            raise FashionError(f"-S {spec!r} is not KEY=V1,V2,...")
        if key in (k for k, _ in axes):
            raise FashionError(f"-S {key} is given twice; list all its values in one -S")
        for value in values:  # refused here, not by every task of the sweep on the cluster
            try:
                parsed = YAML(typ="safe", pure=True).load(value)  # as DVC parses -S values
            except YAMLError:
                parsed = value
            params.validate({key: parsed}, source=f"-S {spec}")
        axes.append((key, values))
    combinations = itertools.product(*[[f"{key}={v}" for v in values] for key, values in axes])
    return [Point(i, f"{prefix}-{i}", point) for i, point in enumerate(combinations)]


def task_index(given: int | None) -> int:
    """The task's number: given, or from the scheduler's environment."""
    if given is not None:
        return given
    for variable in INDEX_VARIABLES:
        value = os.environ.get(variable, "")
        if value:
            if not value.isdigit():
                raise FashionError(f"{variable} is {value!r}, not a task number")
            return int(value)
    raise FashionError("no task number: give --index, or run as a task of a SLURM job array "
                       "(SLURM_ARRAY_TASK_ID) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX)")


def dvc(repo: Path, *args: str, capture: bool = False) -> subprocess.CompletedProcess:
    """Run a DVC command, its messages passed through to the task's log (its output too unless
    captured); raise with DVC's own reason if it fails."""
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, stderr=subprocess.PIPE,
                          stdout=subprocess.PIPE if capture else None, text=True)
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        # DVC's first ERROR line says why (a connection refused); a last one may only sum up.
        # A stage that failed said why in its own one line (cli.stage_command's "Error: ").
        lines = done.stderr.splitlines()
        errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR")]
        reason = errors[0] if errors else f"exit status {done.returncode}"
        stage = [line.removeprefix("Error: ") for line in lines if line.startswith("Error: ")]
        command = " ".join(itertools.takewhile(lambda arg: not arg.startswith("-"), args))
        raise FashionError(f"`dvc {command}` failed: {reason}"
                           + (f"; the stage said: {stage[-1]}" if stage else ""))
    return done


def run_task(repo: Path, point: Point, git_remote: str) -> None:
    """Pull what the DVC remote has of the commit's results (stages whose inputs the point leaves
    alone are then not re-run), run the point as an experiment, push it."""
    try:
        # --allow-missing: a commit whose results were never pushed is computed, not refused.
        dvc(repo, "pull", "--allow-missing")
        dvc(repo, "exp", "run", "--name", point.name,
            *itertools.chain.from_iterable(("-S", a) for a in point.assignments))
        # Outputs first, from the workspace that `exp run` left at the experiment's results, then
        # the git ref: `dvc exp push` does it the other way round, so a failed upload would leave
        # an experiment on the git remote whose outputs are nowhere.
        dvc(repo, "push")
        # Its output only advises pushing the outputs again, which `dvc push` has just done.
        dvc(repo, "exp", "push", "--no-cache", git_remote, point.name, capture=True)
    except FashionError as exc:
        raise FashionError(f"{point} failed: {exc}") from None


def remote_experiments(repo: Path, git_remote: str) -> set[str]:
    """The names of the experiments of the checked-out commit that the git remote holds."""
    done = dvc(repo, "exp", "list", "--name-only", git_remote, capture=True)
    return set(done.stdout.split())


def _unreadable(fs, path: str, errors: tuple) -> list[str]:
    """The files and directories under path whose contents DVCFileSystem cannot get."""
    try:
        if fs.isdir(path):  # answered by dvc.lock; listing an output directory needs its cache
            return [missing for entry in fs.ls(path, detail=False, dvc_only=True)
                    for missing in _unreadable(fs, entry, errors)]
        with fs.open(path) as stream:
            stream.read(1)
        return []
    except errors:
        return [path.lstrip("/")]


def outputs_in_no_cache(repo: Path, name: str) -> list[str]:
    """The outputs of an experiment that DVC cannot read: after `dvc exp pull`, those in no
    cache, local or remote (pushed without its outputs, or to another DVC remote)."""
    # Imported here: DVC takes a second to import, and only this needs it.
    from dvc.api import DVCFileSystem
    from dvc_data.index import DataIndexError

    # Closed at once: it holds open files of the repository at the experiment's revision.
    with contextlib.closing(DVCFileSystem(str(repo), rev=name)) as fs:
        return _unreadable(fs, "/", (DataIndexError, FileNotFoundError))


def collect(repo: Path, points: list[Point], git_remote: str) -> dict[str, list[Point]]:
    """Pull each point's experiment and its outputs from the remotes. Return the points by what
    became of them: "pulled"; "missing", whose experiment the git remote lacks (a task that
    failed or has not finished); "uncached", whose outputs are in no cache."""
    pushed = remote_experiments(repo, git_remote)
    found = [p for p in points if p.name in pushed]
    if found:
        # Captured: with --force, DVC 3.67 says "No experiments to pull." having pulled them.
        dvc(repo, "exp", "pull", "--force", git_remote, *[p.name for p in found], capture=True)
    uncached = [p for p in found if outputs_in_no_cache(repo, p.name)]
    return {"pulled": [p for p in found if p not in uncached], "uncached": uncached,
            "missing": [p for p in points if p.name not in pushed]}
