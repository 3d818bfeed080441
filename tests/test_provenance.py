"""What a run records about the code it ran (fashion/provenance.py), in real git repositories."""

import hashlib
import platform
import shutil

import pytest
import torch

from fashion import provenance
from fashion.data import MANIFEST
from tests.conftest import git


@pytest.fixture
def data_dir(dataset, tmp_path):
    _, checksums = dataset
    (tmp_path / "data").mkdir()
    shutil.copy(checksums, tmp_path / "data" / MANIFEST)
    return tmp_path / "data"


@pytest.mark.parametrize("edited, changed", [
    (None, False), ("fashion/model.py", True), ("scripts/train.py", True), ("dvc.yaml", True),
    ("requirements.txt", True), ("Makefile", False),
])
def test_git_code_changed_follows_edits_to_what_the_stages_depend_on(repo, data_dir, monkeypatch,
                                                                      edited, changed):
    if edited:
        with open(repo / edited, "a") as f:
            f.write("\n# edited\n")
    monkeypatch.chdir(repo)
    record = provenance.record(torch.device("cpu"), {"lr": 0.001}, data_dir)
    assert record["git_commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert record["git_code_changed"] is changed


def test_outside_a_git_repository_the_code_is_unknown_not_unchanged(tmp_path, data_dir, monkeypatch):
    (tmp_path / "not-a-repo").mkdir()
    monkeypatch.chdir(tmp_path / "not-a-repo")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    record = provenance.record(torch.device("cpu"), {"lr": 0.001}, data_dir)
    assert record["git_commit"] is None and record["git_code_changed"] is None


def test_params_sha256_is_the_sha256_of_the_params_as_sorted_json(tmp_path, data_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = {"seed": 0, "lr": 0.02, "device": "cpu"}
    # The canonical form written out by hand: keys sorted, json.dumps's separators.
    canonical = b'{"device": "cpu", "lr": 0.02, "seed": 0}'
    record = provenance.record(torch.device("cpu"), params, data_dir)
    assert record["params_sha256"] == hashlib.sha256(canonical).hexdigest()
    # A changed value changes it; the order the keys came in does not.
    changed = provenance.record(torch.device("cpu"), {**params, "lr": 0.01}, data_dir)
    reordered = provenance.record(torch.device("cpu"), dict(reversed(params.items())), data_dir)
    assert changed["params_sha256"] != record["params_sha256"] == reordered["params_sha256"]


def test_the_record_names_the_data_software_and_machine(tmp_path, data_dir, dataset, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, checksums = dataset
    record = provenance.record(torch.device("cpu"), {}, data_dir)
    # The manifest's lines, read without the project's parser.
    expected = dict(reversed(line.split()) for line in checksums.read_text().splitlines())
    assert record["data_sha256"] == expected and len(expected) == 4
    assert record["python"] == platform.python_version()
    assert record["torch"] == torch.__version__
    assert (record["cuda"], record["cudnn"], record["device"]) == (None, None, "cpu")
    assert record["threads"] == torch.get_num_threads()
    models = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
              if line.startswith("model name")]
    assert record["device_name"] == models[0]


def test_an_untracked_file_beside_the_code_is_not_a_change_to_it(repo, data_dir, monkeypatch):
    (repo / "fashion/scratch.py").write_text("# a file of the user's, never committed\n")
    monkeypatch.chdir(repo)
    assert provenance.record(torch.device("cpu"), {}, data_dir)["git_code_changed"] is False
