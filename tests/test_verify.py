"""make verify's verdict (fashion/verify.py) on real DVC pipelines in temporary git repos, and a
fresh clone's reproduction leaving git status clean."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, dvc, git, make_dry_run, make_repo, run

pytestmark = pytest.mark.slow
RESULTS = 10  # dvc.yaml's outputs, the two provenance records aside


def verify(repo: Path, env: dict, *args: str):
    return run([sys.executable, str(repo / "scripts/verify.py"), *args], repo, env, check=False)


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-q", "-m",
        message)


@pytest.fixture(scope="module")
def baseline(pipeline, tmp_path_factory) -> Path:
    """The pipeline repo with its outputs committed as the baseline: dvc.lock and metrics/."""
    repo = tmp_path_factory.mktemp("baseline") / "repo"
    shutil.copytree(pipeline, repo, symlinks=True)
    commit(repo, "baseline")
    return repo


@pytest.fixture
def workspace(baseline, tmp_path) -> Path:
    """A private copy of the baseline repo, DVC cache included."""
    repo = tmp_path / "repo"
    shutil.copytree(baseline, repo, symlinks=True)
    return repo


def one_line_error(done, text: str) -> None:
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and text in done.stderr, done.stderr


def test_a_fresh_clone_reproduces_the_baseline_and_leaves_git_status_clean(baseline, env,
                                                                           tmp_path):
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(baseline), str(clone)], tmp_path, env)
    dvc(clone, env, "repro")
    assert git(clone, "status", "--porcelain") == ""
    # The host records were written beside the committed ones, and git ignores them.
    host = json.loads((clone / "metrics/provenance/train.host.json").read_text())
    assert host["git_commit"] == git(baseline, "rev-parse", "HEAD").strip()
    done = verify(clone, env)
    assert (done.returncode, done.stdout) == (0, f"reproduced bit for bit: {RESULTS} outputs\n")


def test_a_changed_param_fails_and_names_the_accuracy_change(workspace, env):
    before = json.loads((workspace / "metrics/evaluate.json").read_text())["accuracy"]
    dvc(workspace, env, "exp", "run", "-S", "lr=0.05")
    after = json.loads((workspace / "metrics/evaluate.json").read_text())["accuracy"]
    assert after != before
    # Another input is never a reproduction, whatever the tolerance.
    done = verify(workspace, env, "--tolerance", "1")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("not a reproduction") and "  param lr: 0.02 -> 0.05" in lines
    accuracy, = [line.split() for line in lines if line.startswith("  evaluate accuracy ")]
    assert accuracy[2:] == [f"{before:.6g}", f"{after:.6g}", f"{after - before:+.6g}"]
    assert "  models/model.pt" in lines and "  metrics/evaluate.json" in lines


@pytest.mark.parametrize("output", ["plots/confusion.csv", "plots/pr/bag.csv",
                                    "metrics/train.json"])
def test_an_output_edited_after_the_lock_was_written_is_caught(workspace, env, output):
    lock = (workspace / "dvc.lock").read_text()
    with open(workspace / output, "a") as f:
        f.write("\n")
    done = verify(workspace, env)
    assert done.returncode == 1 and done.stdout.startswith(
        f"differs from HEAD's baseline: 1 of {RESULTS} outputs"), done.stdout + done.stderr
    assert f"  {output.removesuffix('/bag.csv')}" in done.stdout.splitlines()
    assert (workspace / "dvc.lock").read_text() == lock


def test_a_result_moved_within_the_tolerance_passes_only_with_it(workspace, env):
    path = workspace / "metrics/evaluate.json"
    metrics = json.loads(path.read_text())
    metrics["accuracy"] += 0.001
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    assert verify(workspace, env).returncode == 1
    done = verify(workspace, env, "--tolerance", "0.01")
    assert done.returncode == 0 and done.stdout.startswith("reproduced within tolerance 0.01")
    done = verify(workspace, env, "--tolerance", "0.0001")
    assert done.returncode == 1
    assert "evaluate accuracy moved +0.001, more than the tolerance 0.0001" in done.stdout


def test_the_same_bits_from_an_edit_and_other_switches_pass_and_name_both(workspace, env):
    with open(workspace / "requirements.txt", "a") as f:
        f.write("# a comment changes no output\n")
    dvc(workspace, {**env, "FASHION_FILL_UNINITIALIZED": "1"}, "repro")
    done = verify(workspace, env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == [f"reproduced bit for bit: {RESULTS} outputs",
                         "from inputs that differ from HEAD's:",
                         "  requirements.txt (a dependency of visualize, train, evaluate)"]
    assert lines[3].startswith("the provenance records differ")
    assert ["fill_uninitialized_memory", "False", "True"] in [line.split() for line in lines]


def test_a_missing_output_is_one_line(workspace, env):
    (workspace / "models/model.pt").unlink()
    one_line_error(verify(workspace, env), "missing from the workspace: models/model.pt; run "
                                           "make repro")


def test_a_stale_output_is_one_line(workspace, env):
    (workspace / "params.yaml").write_text(
        (workspace / "params.yaml").read_text().replace("lr: 0.02", "lr: 0.03"))
    one_line_error(verify(workspace, env), "are out of date with their code, params or inputs")


def test_a_baseline_never_produced_is_one_line(tmp_path, env):
    repo = make_repo(tmp_path / "repo")
    one_line_error(verify(repo, env), "HEAD's commit holds no dvc.lock with outputs")


def test_outside_a_dvc_repository_is_one_line(tmp_path, env):
    done = run([sys.executable, str(ROOT / "scripts/verify.py")], tmp_path,
               {**env, "GIT_CEILING_DIRECTORIES": str(tmp_path.parent)}, check=False)
    one_line_error(done, "not inside a DVC repository")


@pytest.mark.parametrize("assignments, command", [
    ((), "python scripts/verify.py"),
    (("TOLERANCE=0.01",), "python scripts/verify.py --tolerance 0.01"),
])
def test_make_verify_passes_the_tolerance_on(assignments, command):
    assert make_dry_run("verify", *assignments)[-1].rstrip() == command
