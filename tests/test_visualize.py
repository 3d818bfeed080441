"""The visualize stage's views, read back from its event files."""

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.compat.proto.graph_pb2 import GraphDef
from torch.utils.tensorboard import SummaryWriter

from fashion import data, determinism, model, visualize
from fashion.errors import ParamsError
from tests.events import events, summaries


def test_a_large_first_batch_is_shown_and_traced_by_its_first_64_images(tmp_path, data_dir):
    logdir = tmp_path / "runs"
    visualize.run(params={"seed": 0, "batch_size": 150, "embedding_samples": 10},
                  data_dir=data_dir, logdir=logdir)
    (_, grid), = summaries(logdir)["fashion_mnist_images"]
    assert Image.open(io.BytesIO(grid.image.encoded_image_string)).size == (8 * 28, 8 * 28)
    graph, = [GraphDef.FromString(e.graph_def) for e in events(logdir) if e.HasField("graph_def")]
    inputs = [node for node in graph.node if node.op == "IO Node" and node.name.startswith("input")]
    assert [d.size for d in inputs[0].attr["_output_shapes"].list.shape[0].dim] == [64, 1, 28, 28]


def test_the_graph_is_the_one_add_graph_draws_for_the_untraced_net(tmp_path, data_dir):
    visualize.run(params={"seed": 0, "batch_size": 4, "embedding_samples": 10},
                  data_dir=data_dir, logdir=tmp_path / "runs")
    with SummaryWriter(str(tmp_path / "reference")) as writer:
        writer.add_graph(model.initial_net(0), torch.zeros(4, 1, 28, 28))

    def graph(logdir):
        event, = [e for e in events(logdir) if e.HasField("graph_def")]
        return GraphDef.FromString(event.graph_def).SerializeToString(deterministic=True)
    assert graph(tmp_path / "runs") == graph(tmp_path / "reference")


def projector(logdir):
    """(points as uint8 pixel rows, class names, sprite as a grey-level array) of the projector."""
    rows = (logdir / "00000/default/tensors.tsv").read_text().splitlines()
    points = np.array([[float(x) for x in row.split("\t")] for row in rows])
    names = (logdir / "00000/default/metadata.tsv").read_text().splitlines()
    sprite = np.array(Image.open(logdir / "00000/default/sprite.png").convert("L"))
    return np.rint(points * 255).astype(np.uint8), names, sprite


def test_the_grid_shows_the_first_batch_the_train_stage_draws(tmp_path, data_dir):
    visualize.run(params={"seed": 5, "batch_size": 3, "embedding_samples": 1},
                  data_dir=data_dir, logdir=tmp_path / "runs")
    (step, grid), = summaries(tmp_path / "runs")["fashion_mnist_images"]
    shown = np.array(Image.open(io.BytesIO(grid.image.encoded_image_string)).convert("L"))
    assert step == 0 and shown.shape == (28, 3 * 28)  # one row of the batch's 3 images
    images, _ = data.load_split(data_dir, "train")
    # The train stage's first batch: torch.randperm on the seed's batch-order stream, cut in 3s.
    first = torch.randperm(len(images), generator=determinism.generator(5, "batch-order"))[:3]
    expected = np.concatenate(list(images[first].numpy()), axis=1).astype(int)
    assert np.abs(shown.astype(int) - expected).max() <= 1  # the float round trip: one grey level


@pytest.mark.parametrize("seed", [0, 1])
def test_the_projector_holds_every_image_once_each_beside_its_own_class_and_sprite(
        tmp_path, data_dir, seed):
    images, labels = data.load_split(data_dir, "train")
    visualize.run(params={"seed": seed, "batch_size": 4, "embedding_samples": len(images)},
                  data_dir=data_dir, logdir=tmp_path / "runs")  # the largest legal sample
    points, names, sprite = projector(tmp_path / "runs")
    # Each point found among the training images by its pixels: the sample is all of them, in
    # the order of the seed's embedding stream, and each name is that image's own class.
    index = {image.tobytes(): i for i, image in enumerate(images.numpy())}
    found = [index[row.tobytes()] for row in points]
    assert sorted(found) == list(range(len(images)))
    assert found == torch.randperm(len(images),
                                   generator=determinism.generator(seed, "embedding")).tolist()
    assert names == [data.CLASSES[labels[i]] for i in found]
    side = sprite.shape[0] // 28  # a square of thumbnails, row by row
    for k in (0, 1, side, len(found) - 1):
        thumb = sprite[28 * (k // side):28 * (k // side + 1), 28 * (k % side):28 * (k % side + 1)]
        assert np.abs(thumb.astype(int) - images[found[k]].numpy()).max() <= 1


def test_more_embedding_samples_than_images_is_refused_before_any_output(tmp_path, data_dir):
    with pytest.raises(ParamsError, match="embedding_samples is 201 but the training set has 200 "
                                          "images; choose at most 200"):
        visualize.run(params={"seed": 0, "batch_size": 4, "embedding_samples": 201},
                      data_dir=data_dir, logdir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_tracing_the_graph_warns_of_nothing(tmp_path, data_dir):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        visualize.run(params={"seed": 0, "batch_size": 4, "embedding_samples": 10},
                      data_dir=data_dir, logdir=tmp_path / "runs")
    assert [str(w.message) for w in caught if "trace" in str(w.message).lower()] == []


def test_the_net_is_traced_once_for_the_graph(tmp_path, data_dir, monkeypatch):
    # add_graph's own trace check would run the net again to compare outputs: time and an import
    # of torch.distributed for nothing, as the graph's bytes are the same.
    calls = []
    initial_net = model.initial_net

    def counted(seed):
        net = initial_net(seed)
        net.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
        return net
    monkeypatch.setattr(model, "initial_net", counted)
    visualize.run(params={"seed": 0, "batch_size": 4, "embedding_samples": 10},
                  data_dir=data_dir, logdir=tmp_path / "runs")
    assert calls == [4]
