"""fashion/experiments.py against real DVC experiments of a one-line stage: seconds, not the
minutes of tests/test_experiments.py, which runs the project's own pipeline."""

import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from fashion import experiments
from fashion.errors import FashionError
from tests.conftest import dvc, git

STAGE = """\
import json, os, sys
params = dict(line.split(": ") for line in open("params.yaml").read().splitlines())
os.makedirs("runs/train", exist_ok=True)
open("runs/train/events", "w").write(f"lr {params['lr']}")
json.dump({"accuracy": float(params["lr"]) * 2}, open("metrics.json", "w"))
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory, env) -> Path:
    """A baseline commit (lr 0.1), an experiment run from it (lr 0.2) and one only queued."""
    repo = tmp_path_factory.mktemp("listing") / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text("lr: 0.1\nseed: 0\n")
    (repo / "stage.py").write_text(STAGE)
    (repo / "dvc.yaml").write_text(json.dumps({"stages": {"train": {
        "cmd": f"{sys.executable} stage.py", "deps": ["stage.py"], "params": ["lr", "seed"],
        "outs": ["runs/train"], "metrics": [{"metrics.json": {"cache": False}}]}}}))
    git(repo, "init", "-q", "-b", "main")
    dvc(repo, env, "init", "-q")
    dvc(repo, env, "repro", "-q")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "-m", "baseline")
    dvc(repo, env, "exp", "run", "-q", "-S", "lr=0.2", "--name", "faster")
    dvc(repo, env, "exp", "run", "-q", "--queue", "-S", "lr=0.3", "--name", "later")
    return repo


@pytest.fixture(autouse=True)
def dvc_env(env, monkeypatch):
    """`dvc exp show`, which experiments.py runs, in the tests' DVC environment."""
    for key in ("DVC_NO_ANALYTICS", "DVC_SITE_CACHE_DIR", "PATH"):
        monkeypatch.setenv(key, env[key])


def test_the_listing_holds_the_baseline_then_each_finished_experiment(repo):
    listing = experiments.load(repo)
    base, faster = listing.finished
    assert listing.unfinished == ["later"]
    assert experiments.list_experiments(repo) == listing.finished
    refs = dict(reversed(line.split()) for line in git(repo, "show-ref").splitlines())
    assert base.rev == git(repo, "rev-parse", "HEAD").strip()
    assert faster.rev == next(rev for ref, rev in refs.items() if ref.endswith("/faster"))
    stage_md5 = hashlib.md5((repo / "stage.py").read_bytes()).hexdigest()
    assert (base.name, base.params, base.changed, base.metrics, base.deps, base.baseline) == (
        "main", {"lr": 0.1, "seed": 0}, {}, {"metrics.json": {"accuracy": 0.2}},
        {"stage.py": stage_md5}, True)
    assert (faster.name, faster.params, faster.changed, faster.metrics, faster.deps, faster.baseline) == (
        "faster", {"lr": 0.2, "seed": 0}, {"lr": 0.2}, {"metrics.json": {"accuracy": 0.4}},
        {"stage.py": stage_md5}, False)
    assert base.timestamp <= faster.timestamp and len(faster.timestamp) == len("2026-12-05T09:14:38")
    assert (base.label, faster.label) == ("main (baseline)", "faster (lr=0.2)")
    assert faster.metric("metrics.json", "accuracy") == 0.4
    assert faster.metric("metrics.json", "loss") is None and faster.metric("other.json", "x") is None
    # DVC applied the last experiment run to the workspace: its results, under the name workspace.
    workspace = listing.workspace
    assert (workspace.rev, workspace.name, workspace.params, workspace.baseline) == (
        "workspace", "workspace", {"lr": 0.2, "seed": 0}, False)
    assert workspace.metrics == {"metrics.json": {"accuracy": 0.4}}


def test_on_a_detached_head_the_baseline_is_named_by_its_short_commit(repo, tmp_path):
    # As CI checks out a commit that no local branch holds: nothing for DVC to name it by.
    detached = tmp_path / "detached"
    shutil.copytree(repo, detached, symlinks=True)
    git(detached, "checkout", "-q", "--detach")
    git(detached, "branch", "-q", "-D", "main")  # no branch holds the commit
    base, faster = experiments.load(detached).finished
    assert (base.name, base.label) == (base.rev[:7], f"{base.rev[:7]} (baseline)")
    assert (faster.name, faster.params) == ("faster", {"lr": 0.2, "seed": 0})


def test_an_experiment_that_changes_nothing_says_so():
    same = experiments.Experiment(rev="0" * 40, name="again", params={"lr": 0.1}, changed={},
                                  metrics={}, deps={}, timestamp=None)
    assert same.label == "again (no change)"
    assert experiments.changes({"lr": 0.2, "seed": 1}) == "lr=0.2 seed=1"


def test_a_revision_dvc_reports_without_params_or_metrics_lists_with_none():
    # `dvc exp show --json` leaves out params.yaml for a commit whose pipeline reads none.
    bare = experiments._experiment({"rev": "f" * 40, "data": {"params": {}}}, "bare", {"lr": 0.1})
    assert (bare.params, bare.changed, bare.metrics, bare.deps, bare.timestamp) == ({}, {}, {}, {}, None)


def test_dvc_failing_is_one_line_with_dvc_s_reason(tmp_path):
    with pytest.raises(FashionError) as failed:
        experiments.show(tmp_path)
    message = str(failed.value)
    assert message.startswith("`dvc exp show` failed: you are not") and "\n" not in message
    assert "not inside of a DVC repository" in message


def test_gathering_copies_each_experiment_s_logs_from_the_cache(repo, tmp_path):
    out = tmp_path / "views" / "out"  # its parent made too
    copied, uncached, failed = experiments.gather(repo, out)
    assert (copied, uncached, failed) == (["main (baseline)", "faster (lr=0.2)"], [], [])
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "faster (lr=0.2)/train/events", "main (baseline)/train/events"]
    assert (out / "main (baseline)/train/events").read_text() == "lr 0.1"
    assert (out / "faster (lr=0.2)/train/events").read_text() == "lr 0.2"


def test_an_experiment_that_cannot_be_copied_is_left_out_with_why(repo, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "faster (lr=0.2)").write_bytes(b"in the way")  # its run directory cannot be made
    copied, uncached, failed = experiments.gather(repo, out)
    assert (copied, uncached) == (["main (baseline)"], [])
    [reason] = failed
    assert reason.startswith("faster (lr=0.2) (") and reason.endswith(")") and "\n" not in reason
    assert (out / "faster (lr=0.2)").read_bytes() == b"in the way"


def test_a_copy_that_fails_halfway_leaves_nothing_and_the_next_experiment_is_copied(repo, tmp_path):
    out = tmp_path / "out"
    (out / "main (baseline)").mkdir(parents=True)
    (out / "main (baseline)/train").write_bytes(b"in the way")  # the copy fails inside the run
    copied, uncached, failed = experiments.gather(repo, out)
    assert (copied, uncached) == (["faster (lr=0.2)"], [])
    [reason] = failed
    # The error's own words, on one line: the OS error and the path it names.
    assert re.fullmatch(r"main \(baseline\) \(\[Errno \d+\] [^\n]*main \(baseline\)/train[^\n]*\)",
                        reason), reason
    assert not (out / "main (baseline)").exists()  # the half-made run removed
    assert (out / "faster (lr=0.2)/train/events").read_text() == "lr 0.2"


def test_logs_missing_from_the_cache_are_named_and_the_rest_copied(repo, tmp_path, env):
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))  # no DVC cache, and no experiments
    git(clone, "fetch", "-q", str(repo), "refs/exps/*:refs/exps/*")
    (clone / ".dvc/cache").mkdir(parents=True, exist_ok=True)
    out = tmp_path / "out"
    copied, uncached, failed = experiments.gather(clone, out)
    assert (copied, uncached, failed) == ([], ["main (baseline)", "faster (lr=0.2)"], [])
    assert not any(out.iterdir())


def test_run_names_are_short_distinct_and_readable(tmp_path):
    long_value = "x" * 300
    labels = [f"exp-a (lr={long_value}1)", f"exp-a (lr={long_value}2)", "main (baseline)",
              "a/b (seed=1)", "..", "é" * 200, "é" * 200 + "!", "tab\there", "a" + "é" * 200,
              "b" * 120, "c" * 121, ".", " lead" + " " * 200, "x" * 107 + " tail" * 10]
    taken: set[str] = set()
    names = []
    for label in labels:
        name = experiments.run_name(label, taken)
        taken.add(name)
        names.append(name)
        (tmp_path / name).mkdir()  # a name the file system takes
    assert len(set(names)) == len(labels)
    assert all(len(name.encode()) <= experiments.NAME_BYTES for name in names)
    # Too long: its start, then "... " and the first 8 hex digits of the label's SHA-256.
    digest = hashlib.sha256(labels[0].encode()).hexdigest()
    assert names[0] == f"exp-a (lr={'x' * 98}... {digest[:8]}" and len(names[0]) == 120
    assert names[2] == "main (baseline)" and names[3] == "a_b (seed=1)" and names[7] == "tab_here"
    assert names[4] == f"..... {hashlib.sha256(b'..').hexdigest()[:8]}"
    # A character cut in half is dropped whole: 54 two-byte letters fit beside the suffix.
    assert names[5] == "é" * 54 + f"... {hashlib.sha256(labels[5].encode()).hexdigest()[:8]}"
    assert names[8] == "a" + "é" * 53 + f"... {hashlib.sha256(labels[8].encode()).hexdigest()[:8]}"
    # 120 bytes fit as they are, 121 do not; "." and ".." would name the folder or its parent.
    assert names[9] == labels[9]
    assert names[10] == "c" * 108 + f"... {hashlib.sha256(labels[10].encode()).hexdigest()[:8]}"
    assert names[11] == f".... {hashlib.sha256(b'.').hexdigest()[:8]}"
    # Spaces at the cut are dropped, those that start the label kept.
    assert names[12] == " lead... " + hashlib.sha256(labels[12].encode()).hexdigest()[:8]
    assert names[13] == "x" * 107 + "... " + hashlib.sha256(labels[13].encode()).hexdigest()[:8]
    # A name taken gets a longer hash until it is free.
    first = experiments.run_name("main (baseline)", {"main (baseline)"})
    longer = experiments.run_name("main (baseline)", {"main (baseline)", first})
    assert longer == first + hashlib.sha256(b"main (baseline)").hexdigest()[8]
    assert os.path.basename(first) == first
    # Every length of the hash taken up to its whole 64 digits: the whole is the last one tried.
    digest = hashlib.sha256(b"main (baseline)").hexdigest()
    taken = {"main (baseline)"} | {f"main (baseline)... {digest[:n]}" for n in range(8, 64)}
    assert experiments.run_name("main (baseline)", taken) == f"main (baseline)... {digest}"
    with pytest.raises(AssertionError, match="^two labels with one SHA-256$"):
        experiments.run_name("main (baseline)", taken | {f"main (baseline)... {digest}"})
