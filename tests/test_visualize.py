"""The visualize stage's views, read back from its event files."""

import io

import torch
from PIL import Image
from tensorboard.compat.proto.graph_pb2 import GraphDef
from torch.utils.tensorboard import SummaryWriter

from fashion import model, visualize
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
