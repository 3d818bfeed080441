"""The pipeline end to end: `dvc repro` in a real git repo on synthetic data, artefacts read back."""

import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.compat.proto.graph_pb2 import GraphDef
from torch.utils.tensorboard import summary as tb_summary

from fashion import data, determinism, evaluation, model, visualize
from tests.conftest import dvc
from tests.events import events, scalars, summaries

pytestmark = pytest.mark.slow
LOG_STEPS = [40, 80, 120, 160, 200]  # images seen: 200 images in batches of 4, logged every 40


def test_repro_leaves_a_clean_status(pipeline, env):
    assert json.loads(dvc(pipeline, env, "status", "--json").stdout) == {}
    assert "Data and pipelines are up to date" in dvc(pipeline, env, "repro").stdout


def test_visualize_writes_grid_and_graph(pipeline):
    logdir = pipeline / "runs/visualize"
    (step, grid), = summaries(logdir)["fashion_mnist_images"]
    image = Image.open(io.BytesIO(grid.image.encoded_image_string))
    assert step == 0 and image.size == (4 * 28, 28)  # the 4 images of the first batch in a row
    # The first mini-batch the train stage draws (same seed, same stream), nothing else.
    images, _ = data.load_split(pipeline / "data/fashion-mnist", "train")
    order = data.epoch_batches(len(images), 4, determinism.generator(0, "batch-order"))
    shown = torch.from_numpy(np.array(image.convert("L"))).int()
    expected = torch.cat(list(images[order[0]].int().squeeze(1)), dim=1)
    other = torch.cat(list(images[order[1]].int().squeeze(1)), dim=1)
    assert (shown - expected).abs().max() <= 1  # the float round trip may cost one grey level
    assert (shown - other).abs().max() > 1
    graph, = [GraphDef.FromString(e.graph_def) for e in events(logdir) if e.HasField("graph_def")]
    ops = {node.op for node in graph.node}
    assert {"aten::_convolution", "aten::max_pool2d", "aten::linear"} <= ops


def test_visualize_writes_the_projector(pipeline):
    logdir = pipeline / "runs/visualize"
    config = (logdir / "projector_config.pbtxt").read_text()
    for expected in ('tensor_path: "00000/default/tensors.tsv"',
                     'metadata_path: "00000/default/metadata.tsv"',
                     'image_path: "00000/default/sprite.png"', "single_image_dim: 28"):
        assert expected in config
    rows = (logdir / "00000/default/tensors.tsv").read_text().splitlines()
    assert len(rows) == 20 and all(len(r.split("\t")) == 784 for r in rows)
    names = (logdir / "00000/default/metadata.tsv").read_text().splitlines()
    assert len(names) == 20 and set(names) <= set(data.CLASSES)
    assert Image.open(logdir / "00000/default/sprite.png").size == (5 * 28, 5 * 28)
    # The seed's embedding sample: each point's pixels with its own class name.
    images, labels = data.load_split(pipeline / "data/fashion-mnist", "train")
    sample = torch.randperm(len(images), generator=determinism.generator(0, "embedding"))[:20]
    points = torch.tensor([[float(x) for x in r.split("\t")] for r in rows])
    assert torch.allclose(points, images[sample].flatten(1).float() / 255)
    assert names == [data.CLASSES[i] for i in labels[sample]]
    sprite = np.array(Image.open(logdir / "00000/default/sprite.png").convert("L"))
    assert np.abs(sprite[:28, 28:56].astype(int) - images[sample[1]].numpy()).max() <= 1


def test_another_seed_samples_other_images_for_the_projector(pipeline, tmp_path):
    visualize.run(params={"seed": 1, "batch_size": 4, "embedding_samples": 20},
                  data_dir=pipeline / "data/fashion-mnist", logdir=tmp_path / "runs")
    tsv = (tmp_path / "runs/00000/default/tensors.tsv").read_text()
    assert tsv != (pipeline / "runs/visualize/00000/default/tensors.tsv").read_text()


def test_train_logs_scalars_and_figures_every_log_every_steps(pipeline):
    logdir = pipeline / "runs/train"
    loss = scalars(logdir, "training loss")
    assert [s for s, _ in loss] == LOG_STEPS
    assert loss[-1][1] < loss[0][1]  # it learns
    assert [s for s, _ in scalars(logdir, "training accuracy")] == LOG_STEPS
    assert scalars(logdir, "learning rate") == [(s, pytest.approx(0.02)) for s in LOG_STEPS]
    figures = summaries(logdir)["predictions vs. actuals"]
    assert [s for s, _ in figures] == LOG_STEPS
    assert Image.open(io.BytesIO(figures[0][1].image.encoded_image_string)).format == "PNG"


def test_train_writes_weights_metrics_and_loss_curve(pipeline):
    net = model.load(pipeline / "models/model.pt")
    assert net(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
    metrics = json.loads((pipeline / "metrics/train.json").read_text())
    assert metrics["steps"] == 50 and 0 <= metrics["accuracy"] <= 1
    provenance = json.loads((pipeline / "metrics/provenance/train.json").read_text())
    assert provenance["device"] == "cpu"
    host = json.loads((pipeline / "metrics/provenance/train.host.json").read_text())
    assert host["threads"] == 1
    assert provenance["torch"] == torch.__version__ and provenance["deterministic_algorithms"]
    curve = (pipeline / "plots/train_loss.csv").read_text().splitlines()
    assert curve[0] == "images,loss,accuracy" and [int(r.split(",")[0]) for r in curve[1:]] == LOG_STEPS
    # The DVC plot and the TensorBoard scalars show the same numbers, each in its own column.
    rows = [[float(x) for x in r.split(",")[1:]] for r in curve[1:]]
    logdir = pipeline / "runs/train"
    assert [loss for loss, _ in rows] == pytest.approx([v for _, v in scalars(logdir, "training loss")])
    assert [acc for _, acc in rows] == pytest.approx(
        [v for _, v in scalars(logdir, "training accuracy")])
    assert all(0 <= acc <= 1 for _, acc in rows)
    assert [metrics["loss"], metrics["accuracy"]] == rows[-1]  # 50 steps: the last window is whole


def test_evaluate_writes_pr_curves_metrics_and_plot_data(pipeline):
    found = summaries(pipeline / "runs/evaluate")
    assert sorted(found) == sorted(data.CLASSES)
    for name in data.CLASSES:
        (step, value), = found[name]
        assert value.metadata.plugin_data.plugin_name == "pr_curves"
        assert [d.size for d in value.tensor.tensor_shape.dim] == [6, 127]
    metrics = json.loads((pipeline / "metrics/evaluate.json").read_text())
    assert metrics["accuracy"] > 0.5  # the synthetic classes are easy
    assert set(metrics["per_class"]) == set(data.CLASSES)
    confusion = (pipeline / "plots/confusion.csv").read_text().splitlines()
    assert confusion[0] == "actual,predicted" and len(confusion) == 101
    assert sorted(p.name for p in (pipeline / "plots/pr").iterdir()) == sorted(
        f"{slug}.csv" for slug in data.CLASS_SLUGS)


def test_evaluate_outputs_are_those_of_the_trained_model_on_the_test_set(pipeline):
    images, labels = data.load_split(pipeline / "data/fashion-mnist", "test")
    logits = evaluation.predict(model.load(pipeline / "models/model.pt"), data.normalize(images))
    probs, predicted = logits.softmax(1), logits.argmax(1)
    metrics = json.loads((pipeline / "metrics/evaluate.json").read_text())
    assert metrics["accuracy"] == pytest.approx(float((predicted == labels).double().mean()))
    assert metrics["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)))
    confusion = (pipeline / "plots/confusion.csv").read_text().splitlines()[1:]
    assert confusion == [f"{data.CLASSES[a]},{data.CLASSES[p]}"
                         for a, p in zip(labels.tolist(), predicted.tolist())]
    found = summaries(pipeline / "runs/evaluate")
    for c, (name, slug) in enumerate(zip(data.CLASSES, data.CLASS_SLUGS)):
        # The DVC curve of class c: from its most confident score down to full recall, where
        # precision is the class's share of the test set.
        rows = [[float(x) for x in r.split(",")]
                for r in (pipeline / f"plots/pr/{slug}.csv").read_text().splitlines()[1:]]
        assert rows[0][0] == pytest.approx(float(probs[:, c].max()))
        assert rows[-1][1:] == pytest.approx([float((labels == c).double().mean()), 1.0])
        # TensorBoard's curve of class c: what add_pr_curve makes of class c's probabilities.
        expected = tb_summary.pr_curve(name, (labels == c).numpy(), probs[:, c].numpy())
        (_, value), = found[name]
        assert value.tensor.float_val == pytest.approx(expected.value[0].tensor.float_val)


def test_dvc_plots_render(pipeline, env, tmp_path):
    shown = json.loads(dvc(pipeline, env, "plots", "show", "--json").stdout)["data"]
    assert set(shown) == {"Training loss", "Training accuracy", "Confusion matrix",
                          "Precision-recall per class"}
    pr, = shown["Precision-recall per class"]
    assert pr["type"] == "vega" and len(pr["content"]["data"]["values"]) > 10 * 2
    dvc(pipeline, env, "plots", "show", "-o", str(tmp_path / "html"))
    assert (tmp_path / "html/index.html").read_text().count("vegaEmbed(") == 4


def test_exp_run_with_a_new_lr_records_it_and_changes_metrics(pipeline, env, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(pipeline, repo, symlinks=True)
    before = json.loads((repo / "metrics/evaluate.json").read_text())
    dvc(repo, env, "exp", "run", "-S", "lr=0.01", "--name", "slower")
    rows = json.loads(dvc(repo, env, "exp", "show", "--json").stdout)
    experiment, = [exp for row in rows for exp in (row.get("experiments") or [])
                   if exp.get("name") == "slower"]
    revision, = experiment["revs"]
    params = revision["data"]["params"]["params.yaml"]["data"]
    metrics = revision["data"]["metrics"]["metrics/evaluate.json"]["data"]
    assert params["lr"] == 0.01
    assert metrics["loss"] != before["loss"]
    assert json.loads((repo / "metrics/evaluate.json").read_text())["loss"] == metrics["loss"]
