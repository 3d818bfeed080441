"""The visualize stage: what the tutorial shows before training.

An image grid of the first training mini-batch (of its first 64 images at most), the model
graph, and the embedding projector of a seeded random sample of training images with class names
and the images themselves as sprites.
"""

import warnings
from pathlib import Path

import torch

from fashion import data, determinism, model
from fashion.errors import ParamsError
from fashion.tensorboard_writer import run_writer

PARAMS = ("seed", "batch_size", "embedding_samples")
# The grid and the graph's trace take at most this many images of the first batch: the tutorial
# shows its whole batch of 4, while a batch of 60,000 made a grid and a trace too large to use.
SHOWN = 64


def run(*, params: dict, data_dir: Path, logdir: Path) -> None:
    determinism.configure("cpu")  # a few small tensors: the CPU is enough on any machine
    images, labels = data.load_split(data_dir, "train")
    if params["embedding_samples"] > len(images):
        raise ParamsError(f"embedding_samples is {params['embedding_samples']} but the "
                          f"training set has {len(images)} images; choose at most {len(images)}")
    # The batch the train stage starts with: same seed, same batch size, same order.
    first = data.epoch_batches(len(images), params["batch_size"],
                               determinism.generator(params["seed"], "batch-order"))[0]
    batch = data.normalize(images[first[:SHOWN]])
    sample = torch.randperm(len(images), generator=determinism.generator(params["seed"], "embedding"))
    sample = sample[:params["embedding_samples"]]
    pixels = images[sample].float().div(255)  # raw pixels as features, as in the tutorial

    with run_writer(logdir) as writer:
        writer.add_images("fashion_mnist_images", data.unnormalize(batch))  # one grid image
        # add_graph's torch.jit.trace checks its trace by tracing again and comparing outputs,
        # a check that imports torch.distributed, a large part of this stage's time, to learn
        # what a deterministic Net cannot change. Given a model traced without the
        # check, add_graph writes the same graph (tests/test_visualize.py compares the two).
        net = model.initial_net(params["seed"]).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # PyTorch marks jit.trace deprecated
            warnings.filterwarnings("ignore", "The input to trace is already a ScriptModule")
            writer.add_graph(torch.jit.trace(net, batch, check_trace=False), batch)
        writer.add_embedding(pixels.flatten(1), metadata=[data.CLASSES[i] for i in labels[sample]],
                             label_img=pixels.unsqueeze(1))
