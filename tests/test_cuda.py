"""The GPU path: the CUDA-graph step against eager CUDA and the CPU, and the train stage on CUDA.

Skipped where PyTorch sees no GPU; `make gpu-check` runs these on a GPU machine.
"""

import json
import os
import sys

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, run, write_params
from tests.events import summaries
from tests.faults import snapshot
from fashion import data, determinism, model, synthetic, training

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")

# 50 images in batches of 4: twelve full batches and a short one of 2 each epoch.
HYPER = dict(lr=0.01, momentum=0.9, batch_size=4, epochs=2, log_every=20, seed=3)


class CountingGraphStep(training._CudaGraphStep):
    """The graph step, counting its replays: a graph that is never replayed compares equal too."""
    replays = 0

    def __call__(self, idx):
        CountingGraphStep.replays += len(idx) == len(self.idx)
        return super().__call__(idx)


def fit(device: str, cuda_graph: bool = True, **changes):
    determinism.configure(device)
    images, labels = synthetic.make_split(50, np.random.default_rng(0))
    images = data.normalize(torch.from_numpy(images)).to(device)
    labels = torch.from_numpy(labels.astype(np.int64)).to(device)
    hyper = {**HYPER, **changes}
    net = model.initial_net(hyper["seed"]).to(device)
    logged = []
    result = training.train(net, images, labels, **hyper, cuda_graph=cuda_graph,
                            on_log=lambda p, x, y: logged.append((x.cpu(), y.cpu())))
    weights = torch.nn.utils.parameters_to_vector(net.parameters()).detach().cpu()
    return weights, result, logged


# Every 20 images logs full batches but the last, partial window's; every 50 logs the short last
# batch of each epoch.
@pytest.mark.parametrize("log_every", [20, 50])
def test_graph_step_gives_the_bits_of_eager_cuda(monkeypatch, log_every):
    monkeypatch.setattr(training, "_CudaGraphStep", CountingGraphStep)
    CountingGraphStep.replays = 0
    graph, graph_result, graph_logged = fit("cuda", log_every=log_every)
    assert CountingGraphStep.replays == 24  # the full batches of 2 epochs; the short ones eager
    eager, eager_result, eager_logged = fit("cuda", cuda_graph=False, log_every=log_every)
    assert CountingGraphStep.replays == 24
    assert graph_result.steps == 26
    assert torch.equal(graph, eager)
    assert graph_result.points == eager_result.points
    assert [len(y) for _, y in graph_logged] == ([4] * 4 + [2] if log_every == 20 else [2, 2])
    # The batches handed to the log callback are the right ones.
    assert all(torch.equal(a, b) for pair in zip(graph_logged, eager_logged)
               for a, b in zip(*pair))


def test_auto_takes_the_gpu():
    assert determinism.configure("auto") == torch.device("cuda")


def test_cuda_runs_repeat_bit_for_bit():
    first, first_result, _ = fit("cuda")
    second, second_result, _ = fit("cuda")
    assert torch.equal(first, second) and first_result.points == second_result.points


def test_cuda_trains_the_same_function_as_the_cpu():
    # Different kernels round differently, so the two agree closely but not bit for bit.
    cuda, cuda_result, _ = fit("cuda")
    cpu, cpu_result, _ = fit("cpu")
    assert torch.allclose(cuda, cpu, rtol=1e-3, atol=1e-5)
    assert [p.loss for p in cuda_result.points] == pytest.approx(
        [p.loss for p in cpu_result.points], rel=1e-4)


def train_stage(work, graph: str, fill: str = "0"):
    work.mkdir()
    write_params(work, device="cuda")
    run([sys.executable, ROOT / "scripts/train.py", "--data", work.parent / "data", "--model",
         work / "model.pt", "--metrics", work / "train.json", "--provenance",
         work / "provenance.json", "--plots", work / "loss.csv", "--logdir", work / "runs"],
        work, env={**os.environ, "FASHION_CUDA_GRAPH": graph, "FASHION_FILL_UNINITIALIZED": fill})


def test_train_stage_on_cuda_with_and_without_the_graph(tmp_path):
    mirror = tmp_path / "mirror"
    checksums = synthetic.write(mirror, n_train=200, n_test=40)
    run([sys.executable, ROOT / "scripts/fetch.py", "--out", tmp_path / "data", "--mirror", mirror,
         "--checksums", checksums], tmp_path)
    train_stage(tmp_path / "graph", "1")
    train_stage(tmp_path / "eager", "0")
    # PyTorch's NaN fill of empty tensors, in the graph too (fill kernels captured): no change.
    train_stage(tmp_path / "filled", "1", fill="1")
    graph, eager, filled = tmp_path / "graph", tmp_path / "eager", tmp_path / "filled"
    provenance = json.loads((graph / "provenance.json").read_text())
    assert provenance["device"] == "cuda" and provenance["cudnn_conv_fp32_precision"] == "ieee"
    assert provenance["cuda_matmul_fp32_precision"] == "ieee"
    assert json.loads((graph / "train.json").read_text())["steps"] == 50
    logged = summaries(graph / "runs")
    assert [s for s, _ in logged["predictions vs. actuals"]] == [40, 80, 120, 160, 200]
    assert model.load(graph / "model.pt").conv1.weight.device.type == "cpu"
    assert json.loads((filled / "provenance.json").read_text())["fill_uninitialized_memory"]
    for other in (eager, filled):
        for name in ("model.pt", "train.json", "loss.csv"):
            assert (graph / name).read_bytes() == (other / name).read_bytes(), (other.name, name)
        assert snapshot(graph / "runs") == snapshot(other / "runs")

