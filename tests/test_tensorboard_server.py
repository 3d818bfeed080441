"""The real TensorBoard server on the pipeline's logdir, queried over loopback HTTP."""

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

from fashion.data import CLASSES
from fashion.tensorboard_writer import run_writer
from tests.conftest import make_dry_run

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str, **query):
    url = f"http://127.0.0.1:{port}/data/{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def serve(command: list, env: dict, timeout: float = 60,
          port_args=lambda port: ["--port", str(port)]):
    """Start a TensorBoard `command` on a free port; return (process, port) once it answers.

    The process leads a session of its own, so that stop() reaches a server that make started."""
    port = free_port()
    process = subprocess.Popen([*command, *port_args(port)], env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"tensorboard exited {process.returncode}: {process.stderr.read()}")
        try:
            get(port, "plugins_listing")
            return process, port
        except OSError:
            time.sleep(0.3)
    stop(process)
    raise AssertionError(f"{command[0]} did not answer within {timeout} s")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def wait_for(port, path, check, timeout=60, **query):
    """Poll until TensorBoard has loaded what `check` looks for; return the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        answer = get(port, path, **query)
        if check(answer) or time.monotonic() > deadline:
            return answer
        time.sleep(0.5)


@pytest.fixture(scope="module")
def server(pipeline, env):
    process, port = serve([str(Path(sys.executable).parent / "tensorboard"), "--logdir",
                           str(pipeline / "runs"), "--host", "127.0.0.1", "--reload_interval", "1"],
                          env)
    yield port
    stop(process)


def test_all_plugins_with_data_are_active(server):
    listing = wait_for(server, "plugins_listing",
                       lambda d: all(d.get(p, {}).get("enabled") for p in
                                     ("scalars", "images", "graphs", "projector", "pr_curves")))
    for plugin in ("scalars", "images", "graphs", "projector", "pr_curves"):
        assert listing[plugin]["enabled"], plugin


def test_scalars(server):
    tags = wait_for(server, "plugin/scalars/tags", lambda d: "train" in d)
    assert {"training loss", "training accuracy", "learning rate"} <= set(tags["train"])
    points = get(server, "plugin/scalars/scalars", run="train", tag="training loss")
    assert [step for _, step, _ in points] == [40, 80, 120, 160, 200]


def test_images(server):
    tags = wait_for(server, "plugin/images/tags", lambda d: {"train", "visualize"} <= set(d))
    assert "fashion_mnist_images" in tags["visualize"]
    assert "predictions vs. actuals" in tags["train"]
    figures = get(server, "plugin/images/images", run="train", tag="predictions vs. actuals")
    assert [f["step"] for f in figures] == [40, 80, 120, 160, 200]


def test_graph(server):
    info = wait_for(server, "plugin/graphs/info", lambda d: "visualize" in d)
    assert info["visualize"]["run_graph"]


def test_projector(server):
    runs = wait_for(server, "plugin/projector/runs", lambda d: "visualize" in d)
    assert runs == ["visualize"]
    info = get(server, "plugin/projector/info", run="visualize")
    embedding, = info["embeddings"]
    assert embedding["tensorShape"] == [20, 784]
    assert embedding["sprite"]["singleImageDim"] == [28, 28]
    metadata = urllib.request.urlopen(
        f"http://127.0.0.1:{server}/data/plugin/projector/metadata?" + urllib.parse.urlencode(
            {"run": "visualize", "name": embedding["tensorName"]}), timeout=10).read().decode().splitlines()
    assert len(metadata) == 20 and set(metadata) <= set(CLASSES)


def test_pr_curves(server):
    tags = wait_for(server, "plugin/pr_curves/tags", lambda d: "evaluate" in d)
    assert set(tags["evaluate"]) == set(CLASSES)


def make_tensorboard_command(logdir: Path) -> list[str]:
    """What `make tensorboard` runs, without --port (serve() adds it), with this venv's tensorboard.

    make itself stays out of it: its `setup` prerequisite could install packages, and inside the
    Docker image the checkout's .venv that it puts first on PATH is not usable."""
    [line] = [line for line in make_dry_run("tensorboard", f"LOGDIR={logdir}")
              if line.startswith("tensorboard ")]
    command = shlex.split(line)
    at = command.index("--port")
    return [str(Path(sys.executable).parent / "tensorboard"), *command[1:at], *command[at + 2:]]


def test_make_tensorboard_shows_every_figure(tmp_path, env):
    # TensorBoard keeps 10 images per tag by default; a default train run logs 15 figures.
    with SummaryWriter(tmp_path / "train") as writer:
        for step in range(15):
            writer.add_image("predictions vs. actuals", torch.zeros(3, 4, 4), step)
    process, port = serve(make_tensorboard_command(tmp_path), env)
    try:
        figures = wait_for(port, "plugin/images/images", lambda d: len(d) == 15, run="train",
                           tag="predictions vs. actuals")
    finally:
        stop(process)
    assert [f["step"] for f in figures] == list(range(15))


def test_a_running_tensorboard_shows_a_rerun_stage_s_new_logs(tmp_path, env):
    # What a user sees after `dvc exp run -S lr=...` or `dvc checkout` with `make tensorboard` open.
    def write(lr):
        with run_writer(tmp_path / "train") as writer:
            for step in range(3):
                writer.add_scalar("learning rate", lr, step)

    def learning_rates(answer):
        return [value for _, _, value in answer]

    write(0.001)
    process, port = serve(make_tensorboard_command(tmp_path) + ["--reload_interval", "1"], env)
    try:
        before = wait_for(port, "plugin/scalars/scalars", lambda d: len(d) == 3, run="train",
                          tag="learning rate")
        write(0.01)
        after = wait_for(port, "plugin/scalars/scalars",
                         lambda d: learning_rates(d) == pytest.approx([0.01] * 3), timeout=30,
                         run="train", tag="learning rate")
    finally:
        stop(process)
    assert learning_rates(before) == pytest.approx([0.001] * 3)
    assert learning_rates(after) == pytest.approx([0.01] * 3)


def test_make_tensorboard_notes_a_logdir_without_logs(tmp_path):
    [check] = [line for line in make_dry_run("tensorboard", f"LOGDIR={tmp_path / 'runs'}")
               if line.startswith("find ")]
    missing = subprocess.run(["sh", "-c", check], capture_output=True, text=True, timeout=30)
    assert missing.stderr.endswith("runs holds no TensorBoard logs yet; `make repro` or `dvc pull` "
                                   "writes them.\n")
    with SummaryWriter(tmp_path / "runs/train") as writer:
        writer.add_scalar("training loss", 1.0, 0)
    present = subprocess.run(["sh", "-c", check], capture_output=True, text=True, timeout=30)
    assert present.returncode == 0 and present.stderr == ""
