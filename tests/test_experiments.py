"""Experiments side by side: exp run with any param, queued sweeps, TensorBoard and DVC plots."""

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.conftest import ROOT, dvc, git
from tests.faults import assert_failed
from tests.test_reproduction import snapshot
from tests.test_tensorboard_server import get, serve, stop, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def with_experiments(pipeline, env, tmp_path_factory) -> Path:
    """The pipeline repo with its results committed as the baseline and two experiments."""
    repo = tmp_path_factory.mktemp("exps") / "repo"
    shutil.copytree(pipeline, repo, symlinks=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "baseline results")
    dvc(repo, env, "exp", "run", "-S", "lr=0.01", "--name", "slow")
    # exp run applies its result to the workspace: set lr back, to change seed and batch size only.
    dvc(repo, env, "exp", "run", "-S", "lr=0.02", "-S", "seed=1", "-S", "batch_size=8",
        "--name", "other-seed")
    return repo


def experiments(repo, env) -> dict:
    rows = json.loads(dvc(repo, env, "exp", "show", "--json").stdout)
    return {rev["name"]: rev for row in rows for group in (row.get("experiments") or [])
            for rev in group["revs"]}


def test_every_param_can_be_set(with_experiments, env):
    found = experiments(with_experiments, env)
    params = {name: e["data"]["params"]["params.yaml"]["data"] for name, e in found.items()}
    assert params["slow"]["lr"] == 0.01
    assert (params["other-seed"]["seed"], params["other-seed"]["batch_size"]) == (1, 8)
    steps = found["other-seed"]["data"]["metrics"]["metrics/train.json"]["data"]["steps"]
    assert steps == 25  # 200 images in batches of 8


def test_diff_commands_compare_experiments(with_experiments, env):
    params = json.loads(dvc(with_experiments, env, "params", "diff", "HEAD", "slow", "--json").stdout)
    assert params["params.yaml"]["lr"]["old"] == 0.02 and params["params.yaml"]["lr"]["new"] == 0.01
    metrics = json.loads(dvc(with_experiments, env, "metrics", "diff", "HEAD", "slow", "--json").stdout)
    assert set(metrics["metrics/evaluate.json"]["loss"]) >= {"old", "new"}
    diff = json.loads(dvc(with_experiments, env, "exp", "diff", "HEAD", "slow", "--json").stdout)
    assert diff["params"]["params.yaml"]["lr"]["new"] == 0.01
    assert "loss" in diff["metrics"]["metrics/evaluate.json"]


def test_plots_diff_overlays_experiments(with_experiments, env):
    shown = json.loads(dvc(with_experiments, env, "plots", "diff", "HEAD", "slow", "other-seed",
                           "--json").stdout)["data"]
    loss, = shown["Training loss"]
    revisions = {row["rev"] for row in loss["content"]["data"]["values"]}
    assert revisions == {"HEAD", "slow", "other-seed"}
    confusion, = shown["Confusion matrix"]
    assert {row["rev"] for row in confusion["content"]["data"]["values"]} == revisions


def test_queued_sweep_runs_every_combination(pipeline, env, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(pipeline, repo, symlinks=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "baseline results")
    dvc(repo, env, "exp", "run", "--queue", "-S", "lr=0.01,0.03")
    dvc(repo, env, "queue", "start", "-j", "1")
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        status = dvc(repo, env, "queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    dvc(repo, env, "queue", "stop", "--kill", check=False)
    assert status.count("Success") == 2, status
    lrs = sorted(e["data"]["params"]["params.yaml"]["data"]["lr"]
                 for e in experiments(repo, env).values())
    assert lrs == [0.01, 0.03]


def test_tensorboard_shows_every_experiment_as_a_run(with_experiments, env):
    before = snapshot(with_experiments)
    # Arguments after `--` go to TensorBoard: here a visible one, two points per scalar series.
    server, port = serve([sys.executable, str(ROOT / "scripts/tensorboard_exps.py"), "--repo",
                          str(with_experiments)], env, timeout=120,
                         port_args=lambda port: ["--port", str(port), "--",
                                                 "--samples_per_plugin", "scalars=2"])
    try:
        expected = {"main (baseline)/train", "slow (lr=0.01)/train",
                    "other-seed (seed=1 batch_size=8)/train"}
        tags = wait_for(port, "plugin/scalars/tags", lambda d: expected <= set(d))
        assert expected <= set(tags)
        assert all("training loss" in tags[run] for run in expected)
        pr = wait_for(port, "plugin/pr_curves/tags",
                      lambda d: {"slow (lr=0.01)/evaluate", "main (baseline)/evaluate"} <= set(d))
        assert {"slow (lr=0.01)/evaluate", "main (baseline)/evaluate"} <= set(pr)
        points = get(port, "plugin/scalars/scalars", run="slow (lr=0.01)/train", tag="training loss")
        assert len(points) == 2  # of 5 logged
    finally:
        stop(server)
    assert snapshot(with_experiments) == before  # the workspace was not touched
    # SIGTERM (stop) is how a server is stopped: a clean exit, without the stages' message.
    assert server.returncode == 0
    assert "Terminated" not in server.stderr.read()


def test_tensorboard_failing_to_start_fails_the_command(with_experiments, env, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = subprocess.run([sys.executable, str(ROOT / "scripts/tensorboard_exps.py"), "--repo",
                               str(with_experiments), "--port", str(taken.getsockname()[1])],
                              env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "already in use" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == ("Error: TensorBoard stopped with exit status "
                                                    "255, for the reason above")


def gather_runs(repo, env, out) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts/tensorboard_exps.py"), "--repo",
                           str(repo), "--no-serve", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=120)


GATHERED = ["main (baseline)", "other-seed (seed=1 batch_size=8)", "slow (lr=0.01)"]


def test_a_queued_experiment_is_left_out_not_shown_with_the_baseline_s_logs(with_experiments,
                                                                           env, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(with_experiments, repo, symlinks=True)
    dvc(repo, env, "exp", "run", "--queue", "--name", "waiting", "-S", "lr=0.05")
    done = gather_runs(repo, env, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == GATHERED


def test_experiments_whose_logs_are_not_cached_are_left_out_with_a_warning(with_experiments, env,
                                                                           tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(with_experiments, repo, symlinks=True)
    # What a fresh clone or `dvc gc` leaves: the lock names a logdir the cache does not hold.
    lock = YAML(typ="safe").load(git(repo, "show", f"{experiments(repo, env)['slow']['rev']}:dvc.lock"))
    [md5] = [out["md5"] for out in lock["stages"]["train"]["outs"] if out["path"] == "runs/train"]
    (repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).unlink()
    done = gather_runs(repo, env, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "Warning: logs not in the DVC cache, left out" in done.stderr
    assert done.stderr.splitlines()[0].endswith(": slow (lr=0.01)")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        name for name in GATHERED if not name.startswith("slow")]

    shutil.rmtree(repo / ".dvc/cache")
    done = gather_runs(repo, env, tmp_path / "out-none")
    assert_failed(done, "Error: no experiment's TensorBoard logs are in the DVC cache: run `dvc "
                        "pull`")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "repo"]  # no out-none, no debris


def test_a_project_never_run_has_nothing_to_show_in_one_line(repo, env, tmp_path):
    # dvc.yaml names the logdirs, but no run has put them in the cache.
    done = gather_runs(repo, env, tmp_path / "out")
    assert_failed(done, "Error: no experiment's TensorBoard logs are in the DVC cache: run `dvc "
                        "pull` (a fresh clone), or `dvc repro`")
    assert not (tmp_path / "out").exists()


def test_gathering_without_serving_needs_somewhere_to_keep_the_logs(env):
    done = subprocess.run([sys.executable, str(ROOT / "scripts/tensorboard_exps.py"), "--no-serve"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Error: --no-serve needs --out" in done.stderr
    assert "Traceback" not in done.stderr


def test_one_experiment_that_cannot_be_copied_is_left_out_with_a_warning(with_experiments, env,
                                                                        tmp_path, monkeypatch):
    from fashion import experiments as gathering

    monkeypatch.setenv("PATH", env["PATH"])
    out = tmp_path / "out"
    out.mkdir()
    # A file where one experiment's run directory goes: copying its logs fails (not a directory).
    (out / "slow (lr=0.01)").write_bytes(b"in the way")
    copied, uncached, failed = gathering.gather(with_experiments, out)
    assert copied == [name for name in GATHERED if not name.startswith("slow")]
    assert uncached == []
    [reason] = failed
    assert reason.startswith("slow (lr=0.01) (") and "\n" not in reason
    assert sorted(p.name for p in out.iterdir()) == GATHERED
    assert (out / "slow (lr=0.01)").read_bytes() == b"in the way"
