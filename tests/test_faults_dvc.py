"""A stage that fails under `dvc repro`: the user sees the stage's one-line message, and the DVC
cache survives, so that fixing the input brings the last good outputs back without retraining.

What DVC does when a stage fails: before running a stage's command it deletes that stage's
outputs from the workspace (their cached copies stay), runs the command, and, as the command
failed, neither caches anything nor touches dvc.lock. So afterwards `dvc status` shows the
changed param *and* the deleted outputs; `dvc checkout` brings the last good outputs back, and
once the input is fixed `dvc repro` restores them from the run-cache instead of running again.
"""

import hashlib
import json
import re

import pytest
from ruamel.yaml import YAML

from tests.conftest import ROOT, dvc, git, make_repo, run, write_params
from tests.faults import assert_no_leftovers, outputs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
TRAIN_OUTS = ["models/model.pt", "runs/train", "plots/train_loss.csv", "metrics/train.json",
              "metrics/provenance/train.json"]


def assert_cache_intact(repo) -> None:
    """Every cache object hashes to its name, and every output dvc.lock records is cached."""
    root = repo / ".dvc/cache/files/md5"
    objects = {}
    for path in root.rglob("*"):
        if path.is_file():
            name = path.parent.name + path.name.removesuffix(".dir")
            objects[name] = path
            assert hashlib.md5(path.read_bytes()).hexdigest() == name, f"damaged: {path}"
    lock = YAML(typ="safe").load((repo / "dvc.lock").read_text())
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            digest = out["md5"].removesuffix(".dir")
            if digest not in objects:
                continue  # a cache: false output: git keeps it
            if out["md5"].endswith(".dir"):
                for entry in json.loads(objects[digest].read_text()):
                    assert entry["md5"] in objects, f"{out['path']}/{entry['relpath']} not cached"
    assert objects, "nothing cached"


def commit(repo, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-q", "-m", message)


def test_a_failing_stage_keeps_the_cache_and_fixing_the_input_restores_without_rerunning(
        tmp_path, env):
    repo = make_repo(tmp_path / "repo")
    dvc(repo, env, "repro")
    commit(repo, "baseline")
    good, lock = outputs(repo, TRAIN_OUTS), (repo / "dvc.lock").read_text()

    write_params(repo, lr="abc")
    failed = dvc(repo, env, "repro", check=False)
    assert failed.returncode != 0
    assert ("Error: params.yaml: lr must be a number > 0 that float32 holds (up to about 3.4e+38), "
            "got 'abc'") in failed.stderr
    assert "Traceback" not in failed.stdout + failed.stderr
    assert "Running stage 'visualize'" not in failed.stdout  # it does not read lr
    assert (repo / "dvc.lock").read_text() == lock
    assert_no_leftovers(repo)
    assert_cache_intact(repo)

    # DVC removed train's outputs before running it. Status names the changed param and those
    # deletions, nothing else: no output is modified, that is, none is half-written.
    status = json.loads(dvc(repo, env, "status", "--json").stdout)
    assert set(status) == {"train", "evaluate"}
    assert {"changed deps": {"params.yaml": {"lr": "modified"}}} in status["train"]
    changed_outs, = [entry["changed outs"] for entry in status["train"] if "changed outs" in entry]
    assert changed_outs == dict.fromkeys(TRAIN_OUTS, "deleted")
    assert status["evaluate"] == [{"changed deps": {"models/model.pt": "deleted"}}]

    # With the input fixed, `dvc repro` restores train's outputs from the run-cache instead of
    # training again, and everything is as committed.
    write_params(repo)
    again = dvc(repo, env, "repro")
    assert "Stage 'train' is cached - skipping run, checking out outputs" in again.stdout
    assert "Running stage" not in again.stdout, again.stdout
    assert json.loads(dvc(repo, env, "status", "--json").stdout) == {}
    assert git(repo, "status", "--porcelain") == ""
    assert outputs(repo, TRAIN_OUTS) == good
    assert_cache_intact(repo)


@pytest.mark.parametrize("before", [None, "lr=0.01"], ids=["first", "after-a-good-experiment"])
def test_the_documented_recipe_returns_to_the_commit_after_a_refused_experiment(tmp_path, env, before):
    recipe = re.search(r"return to the last commit's with:\n\n```sh\n(.*?)```",
                       (ROOT / "docs/troubleshooting.md").read_text(), re.DOTALL)[1]
    repo = make_repo(tmp_path / "repo")
    dvc(repo, env, "repro")
    commit(repo, "baseline")
    committed = {name: (repo / name).read_bytes() for name in ("params.yaml", "dvc.lock")}
    if before:  # its metrics and provenance, in the workspace, differ from the commit's
        dvc(repo, env, "exp", "run", "-S", before)

    # A value of the same length, refused at once: the case in which git loses sight of the edit.
    failed = dvc(repo, env, "exp", "run", "-S", "batch_size=0", check=False)
    assert failed.returncode != 0
    assert "batch_size must be an integer from 1 to 2**63 - 1, got 0" in failed.stderr
    assert b"batch_size: 0" in (repo / "params.yaml").read_bytes()

    run(["bash", "-euo", "pipefail", "-c", recipe], repo, env)
    assert {name: (repo / name).read_bytes() for name in committed} == committed
    assert git(repo, "status", "--porcelain") == ""
    assert json.loads(dvc(repo, env, "status", "--json").stdout) == {}


def committed_pipeline(tmp_path, env):
    """A repo whose pipeline ran once and was committed, and the venv's python that runs its stages."""
    repo = make_repo(tmp_path / "repo")
    dvc(repo, env, "repro")
    commit(repo, "baseline")
    return repo, env["PATH"].split(":")[0] + "/python"


def damage_the_cache_copy(repo, path: str, good: bytes) -> bytes:
    """Change a byte on disk in the cache copy of `path`, whose intact content is `good` (a bad
    sector, a stray write), near the end: in the model, inside a tensor. Returns the damaged
    content."""
    digest = hashlib.md5(good).hexdigest()
    cache = repo / ".dvc/cache/files/md5" / digest[:2] / digest[2:]
    mode = cache.stat().st_mode
    cache.chmod(0o644)
    content = bytearray(cache.read_bytes())
    content[-200] ^= 0xFF
    cache.write_bytes(bytes(content))
    cache.chmod(mode)  # as a bad sector leaves it: DVC takes a read-only cache file as intact
    return bytes(content)


@pytest.mark.parametrize("damaged", ["models/model.pt", "data/fashion-mnist/t10k-images-idx3-ubyte"],
                         ids=["model", "data"])
def test_a_damaged_cache_copy_is_named_and_each_advice_given_repairs_it(tmp_path, env, damaged):
    repo, python = committed_pipeline(tmp_path, env)
    dvc(repo, env, "remote", "add", "-d", "store", str(tmp_path / "store"))
    dvc(repo, env, "push")  # an intact copy elsewhere, for the `dvc pull` advice
    good = (repo / damaged).read_bytes()
    for advice in ("rebuild", "pull"):
        content = damage_the_cache_copy(repo, damaged, good)
        # What a user does first: `dvc checkout` brings the damaged copy back and says nothing.
        run(["rm", "-rf", damaged], repo)
        dvc(repo, env, "checkout")
        assert (repo / damaged).read_bytes() == content
        assert dvc(repo, env, "status").stdout.strip() == "Data and pipelines are up to date."

        done = run([python, "scripts/evaluate.py"], repo, env, check=False)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        message = done.stderr.strip()
        assert message.startswith(f"Error: {damaged} comes from a damaged DVC cache copy"), message
        # The advice, followed to the letter: remove, then one of the two ways back.
        _, remove, rebuild, pull = re.findall(r"`([^`]+)`", message)
        assert remove.startswith("rm -f .dvc/cache/") and remove.endswith(f" {damaged}")
        assert rebuild.startswith("dvc repro --force --single-item ") and pull.startswith("dvc pull ")
        run(remove.split(), repo)
        dvc(repo, env, *(rebuild if advice == "rebuild" else pull).split()[1:])
        assert (repo / damaged).read_bytes() == good, advice
        run([python, "scripts/evaluate.py"], repo, env)
        assert_cache_intact(repo)


@pytest.mark.parametrize("damaged", ["models/model.pt", "data/fashion-mnist/t10k-images-idx3-ubyte"],
                         ids=["model", "data"])
def test_a_damaged_workspace_file_is_restored_by_the_checkout_advice(tmp_path, env, damaged):
    repo, python = committed_pipeline(tmp_path, env)
    good = (repo / damaged).read_bytes()
    (repo / damaged).write_bytes(good[:-100])  # the cache copy stays intact
    done = run([python, "scripts/evaluate.py"], repo, env, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    checkout, = [command for command in re.findall(r"`([^`]+)`", done.stderr)
                 if command.startswith("dvc checkout")]
    dvc(repo, env, *checkout.split()[1:])
    assert (repo / damaged).read_bytes() == good
    run([python, "scripts/evaluate.py"], repo, env)


def test_the_documented_reproduction_of_dvc_s_chmod_shows_it(tmp_path, env):
    # The troubleshooting page says what DVC does to a directory an output is symlinked to; this
    # runs its reproduction, so that the page changes when DVC does.
    script = re.search(r"A minimal reproduction of the chmod.*?```sh\n(.*?)```",
                       (ROOT / "docs/troubleshooting.md").read_text(), re.DOTALL)[1]
    done = run(["bash", "-c", script], tmp_path, {**env, "DVC_NO_ANALYTICS": "1"}, check=False)
    printed = re.findall(r"^(\d{3})$", done.stdout, re.MULTILINE)
    assert printed == ["755", "777", "777"], done.stdout + done.stderr
    assert oct((tmp_path / "outside").stat().st_mode & 0o777) == "0o777"
