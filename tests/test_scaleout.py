"""Experiments from many machines in one place: clones of one bare git repository sharing one DVC
remote run a sweep's tasks and push them; another clone collects them (docs/scale-out.md)."""

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fashion import experiments
from tests.conftest import ROOT, dvc, git, run
from tests.faults import assert_failed
from tests.test_reproduction import snapshot

pytestmark = pytest.mark.slow

# Three tasks: two machines run one each at once; the third point diverges, as a task can.
GRID = ("-S", "lr=0.01,0.05,1e30")


def sweep_task(command: str, repo: Path, env: dict, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts/sweep_task.py"), command, "--repo", str(repo),
            *GRID, *args]


def clone(origin: Path, path: Path) -> Path:
    git(origin.parent, "clone", "-q", str(origin), str(path))
    return path


@pytest.fixture(scope="module")
def shared(pipeline, env, tmp_path_factory) -> dict:
    """A bare `origin`, one DVC directory remote, the baseline's results pushed to both; two
    clones ("machines") ran tasks 0 and 1 at once, then the first ran task 2, which failed."""
    root = tmp_path_factory.mktemp("shared")
    origin, storage = root / "origin.git", root / "storage"
    git(root, "init", "-q", "--bare", "-b", "main", str(origin))
    seed = root / "laptop"
    shutil.copytree(pipeline, seed, symlinks=True)
    dvc(seed, env, "remote", "add", "-d", "storage", str(storage))
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "baseline results, shared remote")
    git(seed, "remote", "add", "origin", str(origin))
    git(seed, "push", "-q", "origin", "main")
    dvc(seed, env, "push")

    machines = [clone(origin, root / "machine-a"), clone(origin, root / "machine-b")]
    tasks = [subprocess.Popen(sweep_task("run", machine, env, "--index", str(index)), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for index, machine in enumerate(machines)]
    done = [task.communicate(timeout=600) for task in tasks]
    for task, (out, err) in zip(tasks, done):
        assert task.returncode == 0, err
    failed = run(sweep_task("run", machines[0], env, "--index", "2"), machines[0], env, check=False)
    return {"origin": origin, "storage": storage, "root": root, "tasks": done, "failed": failed}


def test_each_task_reports_its_experiment_by_name(shared):
    assert [err.strip().splitlines()[-1] for _, err in shared["tasks"]] == [
        "task 0: sweep-0 (lr=0.01): pushed to origin", "task 1: sweep-1 (lr=0.05): pushed to origin"]


def test_a_third_machine_collects_both_and_sees_them_in_exp_show_and_tensorboard(shared, env):
    laptop = clone(shared["origin"], shared["root"] / "collector")
    done = run(sweep_task("collect", laptop, env), laptop, env, check=False)
    assert_failed(done, "pulled 2 of 3: sweep-0, sweep-1",
                  "Error: origin lacks the experiments of these tasks (failed, or not finished; "
                  "their logs say which): task 2: sweep-2 (lr=1e30)")
    rows = json.loads(dvc(laptop, env, "exp", "show", "--json").stdout)
    shown = {rev["name"]: rev["data"]["params"]["params.yaml"]["data"]["lr"]
             for row in rows for group in (row.get("experiments") or []) for rev in group["revs"]}
    assert shown == {"sweep-0": 0.01, "sweep-1": 0.05}
    out = shared["root"] / "gathered"
    labels, uncached = experiments.gather(laptop, out)
    assert (sorted(labels), uncached) == (["main (baseline)", "sweep-0 (lr=0.01)",
                                           "sweep-1 (lr=0.05)"], [])


def test_a_failed_task_is_named_in_one_line_and_leaves_the_others_intact(shared, env):
    failed = shared["failed"]
    assert_failed(failed, "Error: task 2: sweep-2 (lr=1e30) failed: `dvc exp run` failed: ERROR:")
    assert failed.stderr.strip().splitlines()[-1].startswith("Error: task 2: sweep-2 (lr=1e30)")
    names = run(["git", "ls-remote", str(shared["origin"]), "refs/exps/*"], shared["root"]).stdout
    assert sorted(line.rsplit("/", 1)[1] for line in names.splitlines()) == ["sweep-0", "sweep-1"]
