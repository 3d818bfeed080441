"""The committed baseline: a fresh clone shows it through DVC, and the README quotes it."""

import hashlib
import json
import re
import subprocess
import sys

from ruamel.yaml import YAML

from fashion import params
from fashion.data import SHA256
from tests.conftest import ROOT


def dvc_json(*args):
    done = subprocess.run([sys.executable, "-m", "dvc", *args, "--json"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_metrics_show_gives_the_baseline_quoted_in_the_readme():
    shown = dvc_json("metrics", "show")[""]["data"]["metrics/evaluate.json"]["data"]
    assert 0.82 <= shown["accuracy"] <= 0.86  # the tutorial's range after one epoch
    readme = (ROOT / "README.md").read_text()
    assert re.search(rf"test accuracy\s+\*\*{shown['accuracy']}\*\*, test loss {shown['loss']:.4f}",
                     readme)


def test_the_baseline_ran_with_the_committed_params_on_the_real_data():
    lock = (ROOT / "dvc.lock").read_text()
    values = params.load(ROOT / "params.yaml", tuple(params.RULES))
    for key in ("lr", "batch_size", "epochs", "seed"):
        assert re.search(rf"^\s+{key}: {values[key]}$", lock, re.M), key
    provenance = json.loads((ROOT / "metrics/provenance/train.json").read_text())
    assert provenance["data_sha256"] == SHA256  # Fashion-MNIST itself, not a test set


def test_the_lock_is_current_with_the_committed_code_and_params():
    # A stale lock makes a fresh clone's `dvc repro` rerun every stage, the fetch included, which
    # then needs the network.
    lock = YAML(typ="safe").load((ROOT / "dvc.lock").read_text())
    values = params.load(ROOT / "params.yaml", tuple(params.RULES))
    stale = []
    for name, stage in lock["stages"].items():
        for dep in stage["deps"]:
            path = ROOT / dep["path"]
            if path.is_file() and hashlib.md5(path.read_bytes()).hexdigest() != dep["md5"]:
                stale.append(f"{name}: {dep['path']}")
        for key, value in stage.get("params", {}).get("params.yaml", {}).items():
            if values[key] != value:
                stale.append(f"{name}: {key}")
    assert not stale, ("dvc.lock is stale; rerun `dvc repro` on the real data and commit it: "
                       f"{stale}")
