"""The matplotlib figure of the tutorial's 'predictions vs. actuals' view, and a process that
renders it while training goes on."""

import signal
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np
import torch
from matplotlib.figure import Figure
from torch.utils.tensorboard._utils import figure_to_image
from torch.utils.tensorboard.summary import image

from fashion.data import CLASSES, unnormalize

PANELS = 4


def predictions_figure(images: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor) -> Figure:
    """Up to four images of a batch, each titled with the predicted class, its probability and the
    actual class, in green when the prediction is right and red when it is wrong.

    Unlike the tutorial's version this takes any batch size (it hard-coded four panels) and
    tensors from any device.
    """
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
    fig = predictions_figure(torch.from_numpy(images), torch.from_numpy(labels),
                             torch.from_numpy(probs))
    return image(tag, figure_to_image(fig), dataformats="CHW").SerializeToString()


def _worker_signals() -> None:
    # Ctrl-C reaches the whole process group: the stage handles it and shuts the worker down,
    # which would otherwise print a traceback of its own. SIGTERM ends the worker plainly rather
    # than through the stage's handler, which a forked worker inherits.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class FigureRenderer:
    """Renders prediction figures in one worker process, in the order they were asked for.

    Drawing a figure and encoding its PNG takes about 90 ms of a CPU core, 1.3 s over the 15
    figures of a default run: 8% of CPU training and a third of a GPU run. The training loop uses
    one core at the tutorial's batch size, so the drawing goes on another.
    """

    def __enter__(self) -> "FigureRenderer":
        self.pool = ProcessPoolExecutor(max_workers=1, initializer=_worker_signals)
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, tag: str, images: torch.Tensor, labels: torch.Tensor,
               probs: torch.Tensor) -> "Future[bytes]":
        """Start drawing; the future's result is what predictions_summary returns."""
        arrays = [t[:PANELS].detach().cpu().numpy() for t in (images, labels, probs)]
        return self.pool.submit(predictions_summary, tag, *arrays)
