"""Exact reproduction as a tested property: reruns, the run-cache, and sharing through a remote."""

import json
import shutil
from pathlib import Path

import pytest

from fashion.provenance import HOST_SUFFIX
from tests.conftest import TEST_PARAMS, dvc, git, run

pytestmark = pytest.mark.slow
OUTPUTS = ("data", "runs", "models", "metrics", "plots")


def snapshot(repo: Path) -> dict[str, bytes]:
    """Every output file's bytes, by path (DVC's own .gitignore files and the host records, which
    are no outputs, left out)."""
    return {str(p.relative_to(repo)): p.read_bytes() for top in OUTPUTS
            for p in sorted((repo / top).rglob("*"))
            if p.is_file() and p.name != ".gitignore" and not p.name.endswith(HOST_SUFFIX)}


@pytest.fixture
def workspace(pipeline, tmp_path) -> Path:
    """A private copy of the pipeline repo, DVC cache included."""
    repo = tmp_path / "repo"
    shutil.copytree(pipeline, repo, symlinks=True)
    return repo


def test_forced_rerun_gives_the_same_bytes_everywhere(workspace, env):
    before, lock = snapshot(workspace), (workspace / "dvc.lock").read_text()
    assert any(p.startswith("runs/train/") for p in before) and "models/model.pt" in before
    dvc(workspace, env, "repro", "--force")
    after = snapshot(workspace)
    assert sorted(after) == sorted(before)
    assert [p for p in before if before[p] != after[p]] == []
    assert (workspace / "dvc.lock").read_text() == lock


def test_pytorch_s_fill_of_new_tensors_changes_no_output(workspace, env):
    # The stages turn PyTorch's NaN fill of empty tensors off, which is safe while no kernel reads
    # memory it has not written; then turning it back on changes nothing but the provenance.
    before = snapshot(workspace)
    dvc(workspace, {**env, "FASHION_FILL_UNINITIALIZED": "1"}, "repro", "--force")
    after = snapshot(workspace)
    assert sorted(after) == sorted(before)
    records = [p for p in before if p.startswith("metrics/provenance/")]
    assert len(records) == 2  # train and evaluate
    assert sorted(p for p in before if before[p] != after[p]) == records
    for path in records:  # the fill was on
        assert json.loads(before[path])["fill_uninitialized_memory"] is False
        assert json.loads(after[path])["fill_uninitialized_memory"] is True


def test_second_repro_runs_nothing(workspace, env):
    done = dvc(workspace, env, "repro")
    assert "Running stage" not in done.stdout
    assert json.loads(dvc(workspace, env, "status", "--json").stdout) == {}


def test_returning_to_the_baseline_lr_restores_from_the_run_cache(workspace, env):
    baseline = snapshot(workspace)
    dvc(workspace, env, "exp", "run", "-S", "lr=0.05")
    assert snapshot(workspace)["models/model.pt"] != baseline["models/model.pt"]
    done = dvc(workspace, env, "exp", "run", "-S", f"lr={TEST_PARAMS['lr']}")
    for stage in ("train", "evaluate"):
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in done.stdout
    assert "Running stage" not in done.stdout
    assert snapshot(workspace) == baseline


def test_push_then_pull_in_a_fresh_clone_restores_every_output(workspace, env, tmp_path):
    remote = tmp_path / "remote"
    dvc(workspace, env, "remote", "add", "--default", "storage", str(remote))
    git(workspace, "add", "-A")
    git(workspace, "commit", "-q", "-m", "results and remote")
    dvc(workspace, env, "push")
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(workspace), str(clone)], tmp_path, env)
    dvc(clone, env, "pull")
    assert snapshot(clone) == snapshot(workspace)
    assert json.loads(dvc(clone, env, "status", "--json").stdout) == {}


def test_exp_show_displays_provenance(pipeline, env):
    rows = json.loads(dvc(pipeline, env, "exp", "show", "--json").stdout)
    workspace, = [row for row in rows if row["rev"] == "workspace"]
    metrics = workspace["data"]["metrics"]
    provenance = metrics["metrics/provenance/train.json"]["data"]
    assert provenance["device"] == "cpu" and provenance["python"].count(".") == 1
    assert set(provenance["data_sha256"]) == {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}
    # docs/reproduction.md's command for the key provenance columns.
    table = dvc(pipeline, env, "exp", "show", "--csv", "--drop", ".*", "--keep",
                "Experiment|metrics/provenance/train.json:(device|torch|numpy|python)$").stdout
    header, row = table.splitlines()[:2]
    shown = {k.removeprefix("metrics/provenance/train.json:"): v
             for k, v in zip(header.split(","), row.split(",")) if "provenance" in k}
    assert shown == {"torch": provenance["torch"], "numpy": provenance["numpy"],
                     "device": "cpu", "python": provenance["python"]}
