"""The matplotlib figure of the tutorial's 'predictions vs. actuals' view, and a process that
renders it while training goes on."""

from __future__ import annotations  # Figure appears in annotations without being imported

import multiprocessing
import signal
from multiprocessing.pool import AsyncResult
from typing import TYPE_CHECKING

import numpy as np
import torch

from fashion.data import CLASSES, unnormalize
from fashion.errors import FashionError

# matplotlib is imported where figures are drawn, in the worker: the train stage itself would
# spend a third of a second importing it.
if TYPE_CHECKING:
    from matplotlib.figure import Figure

PANELS = 4


def predictions_figure(images: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor) -> Figure:
    """Up to four images of a batch, each titled with the predicted class, its probability and the
    actual class, in green when the prediction is right and red when it is wrong.

    Unlike the tutorial's version this takes any batch size (it hard-coded four panels) and
    tensors from any device.
    """
    from matplotlib.figure import Figure

    images, labels, probs = images.detach().cpu(), labels.cpu(), probs.detach().cpu()
    shown = min(PANELS, len(images))
    confidence, predicted = probs.max(dim=1)
    # A Figure not registered with pyplot: nothing global to leak between calls.
    fig = Figure(figsize=(2.5 * shown, 3.2), layout="constrained")
    for i in range(shown):
        ax = fig.add_subplot(1, shown, i + 1, xticks=[], yticks=[])
        ax.imshow(unnormalize(images[i]).mean(dim=0).numpy(), cmap="Greys")
        right = bool(predicted[i] == labels[i])
        ax.set_title(f"{CLASSES[predicted[i]]}, {confidence[i] * 100:.1f}%\n"
                     f"(label: {CLASSES[labels[i]]})", color="green" if right else "red")
    return fig


def predictions_summary(tag: str, images: np.ndarray, labels: np.ndarray,
                        probs: np.ndarray) -> bytes:
    """The serialised image Summary that SummaryWriter.add_figure would write for this figure."""
    from torch.utils.tensorboard._utils import figure_to_image
    from torch.utils.tensorboard.summary import image

    fig = predictions_figure(torch.from_numpy(images), torch.from_numpy(labels),
                             torch.from_numpy(probs))
    return image(tag, figure_to_image(fig), dataformats="CHW").SerializeToString()


def _worker_setup() -> None:
    # Ctrl-C reaches the whole process group: the stage handles it and stops the worker, which
    # would otherwise print a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)  # four small images: threads would only compete with training


class FigureRenderer:
    """Renders prediction figures in one worker process while training goes on.

    Drawing a figure and encoding its PNG takes about 90 ms of a CPU core, 1.3 s over the 15
    figures of a default run: 8% of CPU training and a third of a GPU run. The training loop uses
    one core at the tutorial's batch size, so the drawing goes on another.

    The worker is a fresh interpreter ('spawn'), never a fork of the stage: a fork taken after
    OpenMP's threads had run hung in its first tensor operation (the train stage at batch 64 on
    the CPU, and every run on CUDA).
    """

    TIMEOUT = 120  # seconds for one figure, against some 0.1 s normally: the worker is stuck

    def __enter__(self) -> "FigureRenderer":
        # The worker starts now, so that its imports overlap the stage's data loading.
        self.pool = multiprocessing.get_context("spawn").Pool(1, initializer=_worker_setup)
        return self

    def __exit__(self, *exc) -> None:
        # Once its figures are collected the worker holds nothing; after a failure, nothing
        # that is still wanted. Stopping it beats waiting for its interpreter to wind down.
        self.pool.terminate()
        self.pool.join()

    def submit(self, tag: str, images: torch.Tensor, labels: torch.Tensor,
               probs: torch.Tensor) -> AsyncResult:
        """Start drawing; pass what this returns to `result`."""
        arrays = [t[:PANELS].detach().cpu().numpy() for t in (images, labels, probs)]
        return self.pool.apply_async(predictions_summary, (tag, *arrays))

    def result(self, pending: AsyncResult) -> bytes:
        """What predictions_summary returned in the worker."""
        try:
            return pending.get(self.TIMEOUT)
        except multiprocessing.TimeoutError:
            raise FashionError(f"the figure worker drew nothing for {self.TIMEOUT} s and was "
                               "stopped; rerun the stage, and report it if it happens again") \
                from None
