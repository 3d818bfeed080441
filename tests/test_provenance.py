"""What a run records about the code it ran (fashion/provenance.py), in real git repositories."""

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
