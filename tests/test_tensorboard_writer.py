import hashlib
import os
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

from fashion.tensorboard_writer import EVENT_FILE_PREFIX, run_writer
from tests.conftest import ROOT
from tests.faults import snapshot


def write_some(logdir, scale=1.0):
    with run_writer(logdir) as writer:
        for step in range(3):
            writer.add_scalar("loss", scale / (step + 1), step)
        writer.add_image("grid", torch.linspace(0, 1, 3 * 8 * 8).view(3, 8, 8))
        writer.add_pr_curve("class", torch.tensor([1, 0, 1]), torch.tensor([0.9, 0.4, 0.3]), 0)


def test_same_values_give_the_same_bytes(tmp_path):
    write_some(tmp_path / "a")
    write_some(tmp_path / "b")
    [(name, content)] = snapshot(tmp_path / "a").items()
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")
    assert name == EVENT_FILE_PREFIX + hashlib.sha256(content).hexdigest()[:16]
    events = list(LegacyEventFileLoader(str(tmp_path / "a" / name)).Load())
    assert all(e.wall_time == 0 for e in events)
    assert [v.simple_value for e in events if e.HasField("summary") for v in e.summary.value
            if v.tag == "loss"] == pytest.approx([1.0, 0.5, 1 / 3])


def test_other_values_give_an_event_file_of_another_name(tmp_path):
    # A running TensorBoard notices a rerun stage's logs only under a new name.
    write_some(tmp_path / "a")
    write_some(tmp_path / "b", scale=2.0)
    assert snapshot(tmp_path / "a").keys().isdisjoint(snapshot(tmp_path / "b").keys())


def test_a_failed_stage_leaves_the_previous_logdir_and_no_debris(tmp_path):
    write_some(tmp_path / "logs")
    before = snapshot(tmp_path / "logs")
    with pytest.raises(RuntimeError):
        with run_writer(tmp_path / "logs") as writer:
            writer.add_scalar("loss", 5.0, 0)
            raise RuntimeError("stage failed")
    assert snapshot(tmp_path / "logs") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]


GRAPH_SCRIPT = """
import sys, torch
from fashion.model import initial_net
from fashion.tensorboard_writer import run_writer
with run_writer(sys.argv[1]) as writer:
    writer.add_graph(initial_net(0), torch.zeros(2, 1, 28, 28))
"""


def test_graph_bytes_do_not_depend_on_the_process(tmp_path):
    # The writer serialises the graph's attribute maps in an order that varies between processes.
    for seed in ("1", "2", "3"):
        subprocess.run([sys.executable, "-c", GRAPH_SCRIPT, str(tmp_path / seed)], cwd=ROOT,
                       check=True, env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True)
    assert snapshot(tmp_path / "1") == snapshot(tmp_path / "2") == snapshot(tmp_path / "3")
