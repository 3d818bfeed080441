"""What a run records (fashion/provenance.py): the committed record, which decides the bits, and
the host record beside it, in real git repositories."""

import hashlib
import json
import platform
import re
import shutil
import sys
from pathlib import Path

import google.protobuf
import matplotlib
import numpy
import PIL
import tensorboard

import pytest
import torch

from fashion import determinism, fileio, provenance
from fashion.data import MANIFEST
from tests.conftest import git

# What differs between hosts that give the same bits: never in the committed record.
HOST_ONLY = {"git_commit", "git_code_changed", "cpu", "threads", "hostname", "device_name"}


@pytest.fixture
def data_dir(dataset, tmp_path):
    _, checksums = dataset
    (tmp_path / "data").mkdir()
    shutil.copy(checksums, tmp_path / "data" / MANIFEST)
    return tmp_path / "data"


@pytest.mark.parametrize("edited, changed", [
    (None, False), ("fashion/model.py", True), ("scripts/train.py", True), ("dvc.yaml", True),
    ("requirements.txt", True), ("Makefile", False), ("fashion/untracked_notes.py", False),
])
def test_git_code_changed_follows_edits_to_what_the_stages_depend_on(repo, data_dir, monkeypatch,
                                                                      edited, changed):
    if edited:  # appended to; an untracked file is created (dvc.lock names each file the stages use)
        with open(repo / edited, "a") as f:
            f.write("\n# edited\n")
    monkeypatch.chdir(repo)
    host = provenance.host(b"{}")
    assert host["git_commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert host["git_code_changed"] is changed


def test_outside_a_git_repository_the_code_is_unknown_not_unchanged(tmp_path, monkeypatch):
    (tmp_path / "not-a-repo").mkdir()
    monkeypatch.chdir(tmp_path / "not-a-repo")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    host = provenance.host(b"{}")
    assert host["git_commit"] is None and host["git_code_changed"] is None


def test_params_sha256_hashes_the_values_in_any_key_order(data_dir):
    def recorded(params):
        return provenance.record(torch.device("cpu"), params, data_dir)["params_sha256"]

    assert recorded({"lr": 0.001, "seed": 0}) == recorded({"seed": 0, "lr": 0.001})
    assert recorded({"lr": 0.001, "seed": 0}) != recorded({"lr": 0.002, "seed": 0})
    assert recorded({"lr": 0.001}) == hashlib.sha256(b'{"lr": 0.001}').hexdigest()


def test_the_record_holds_no_host_detail_and_the_host_record_names_the_host(data_dir):
    record = provenance.record(torch.device("cpu"), {"lr": 0.001}, data_dir)
    assert not HOST_ONLY & record.keys()
    assert record["python"].count(".") == 1  # 3.11, not 3.11.7
    assert record["torch"] == torch.__version__ and record["device"] == "cpu"
    host = provenance.host(fileio.json_bytes(record))
    assert {"cpu", "python", "threads", "git_commit"} <= host.keys()
    assert host["python"].count(".") == 2 and host["threads"] == torch.get_num_threads()


def test_a_host_record_counts_only_for_the_record_it_was_written_with(data_dir, tmp_path):
    path = tmp_path / "provenance/train.json"
    with fileio.outputs() as out:
        provenance.write(out, path, torch.device("cpu"), {"lr": 0.001}, data_dir)
    assert provenance.host_path(path) == tmp_path / "provenance/train.host.json"
    assert provenance.read_host(path)["cpu"] == provenance.cpu_name()
    # DVC restores a record from its cache that another run wrote: the host record is not its.
    record = json.loads(path.read_text())
    path.write_bytes(fileio.json_bytes({**record, "params_sha256": "another"}))
    assert provenance.read_host(path) is None


def test_the_record_on_the_cpu_is_each_library_s_own_version_and_no_gpu(data_dir):
    record = provenance.record(torch.device("cpu"), {"lr": 0.001}, data_dir)
    sums = dict(reversed(line.split()) for line in (data_dir / MANIFEST).read_text().splitlines())
    assert record == {
        "params_sha256": hashlib.sha256(b'{"lr": 0.001}').hexdigest(),
        "data_sha256": sums,
        "system": platform.system(), "machine": platform.machine(),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "torch": torch.__version__, "numpy": numpy.__version__,
        "matplotlib": matplotlib.__version__, "pillow": PIL.__version__,
        "protobuf": google.protobuf.__version__, "tensorboard": tensorboard.__version__,
        "device": "cpu", "gpu": None, "cuda": None, "cudnn": None,  # even in a CUDA build of torch
        **determinism.flags(),
    }


def test_the_host_record_names_the_cpu_as_proc_cpuinfo_does(data_dir):
    host = provenance.host(b"{}")
    assert host.keys() == {"record_sha256", "cpu", "cpu_capability", "python", "threads",
                           "git_commit", "git_code_changed"}
    assert host["record_sha256"] == hashlib.sha256(b"{}").hexdigest()
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo here")
    names = re.findall(r"^model name\s*: (.+)$", cpuinfo.read_text(), re.MULTILINE)
    assert host["cpu"] == (names[0].strip() if names else platform.processor() or platform.machine())
