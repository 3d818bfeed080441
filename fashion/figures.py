"""The matplotlib figure of the tutorial's 'predictions vs. actuals' view, and a worker process
that draws it while training goes on.

Only `prediction_panels`, `predictions_figure` and `FigureRenderer.submit` take tensors. Everything
the worker runs (`panels_figure`, `image_summary`, `serve`) needs numpy, matplotlib, Pillow and
TensorBoard's protobufs, never torch: see FigureRenderer.
"""

from __future__ import annotations  # torch and Figure appear in annotations without being imported

import contextlib
import io
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fashion.data import CLASSES, unnormalize
from fashion.errors import FashionError

# matplotlib is imported where figures are drawn, in the worker: the train stage itself would
# spend a third of a second importing it.
if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

PANELS = 4
SECONDS_PER_FIGURE = 0.06  # to draw one and encode its PNG, on one core (see FigureRenderer)
WORKER = "from fashion.figures import serve; serve()"  # the worker's program, for `python -c`


@dataclass(frozen=True)
class Panel:
    pixels: np.ndarray  # (28, 28) grey levels in [0, 1]
    title: str
    right: bool         # the prediction was the label


def prediction_panels(images: torch.Tensor, labels: torch.Tensor,
                      probs: torch.Tensor) -> list[Panel]:
    """Up to four images of a batch, each titled with the predicted class, its probability and the
    actual class. Unlike the tutorial's version this takes any batch size (it hard-coded four
    panels) and tensors from any device."""
    images, labels = images[:PANELS].detach().cpu(), labels[:PANELS].cpu()
    confidence, predicted = probs[:PANELS].detach().cpu().max(dim=1)
    return [Panel(unnormalize(images[i]).mean(dim=0).numpy(),
                  f"{CLASSES[predicted[i]]}, {confidence[i] * 100:.1f}%\n"
                  f"(label: {CLASSES[labels[i]]})",
                  bool(predicted[i] == labels[i]))
            for i in range(len(images))]


def panels_figure(panels: list[Panel]) -> Figure:
    """The panels side by side, titles in green for a right prediction and red for a wrong one."""
    from matplotlib.figure import Figure

    # A Figure not registered with pyplot: nothing global to leak between calls.
    fig = Figure(figsize=(2.5 * len(panels), 3.2), layout="constrained")
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1, xticks=[], yticks=[])
        ax.imshow(panel.pixels, cmap="Greys")
        ax.set_title(panel.title, color="green" if panel.right else "red")
    return fig


def predictions_figure(images: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor) -> Figure:
    """The tutorial's plot_classes_preds, drawn in this process."""
    return panels_figure(prediction_panels(images, labels, probs))


def image_summary(tag: str, fig: Figure) -> bytes:
    """The serialised Summary that SummaryWriter.add_figure writes for `fig`.

    These are the steps of torch.utils.tensorboard's figure_to_image and summary.image for an RGB
    figure, written out because the worker must not import torch (see FigureRenderer).
    tests/test_figures.py checks the bytes against add_figure's.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgb = np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[:, :, :3])
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, format="PNG")
    height, width, channels = rgb.shape
    image = Summary.Image(height=height, width=width, colorspace=channels,
                          encoded_image_string=png.getvalue())
    return Summary(value=[Summary.Value(tag=tag, image=image)]).SerializeToString()


def serve() -> None:
    """The worker: draw each pickled (tag, panels) request read from stdin; at the end of the
    input, write the list of Summaries, pickled, to stdout."""
    import matplotlib

    # A matplotlibrc in the working directory, $MATPLOTLIBRC or the user's config would change
    # the figures' size and fonts, and with them the bytes of the train stage's logdir.
    matplotlib.rcdefaults()
    # The answer has descriptor 1's pipe to itself: anything else bound for standard output, a
    # stray print or a C library's message, goes to stderr instead of corrupting it.
    answer = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # The imports and the first drawing (loading fonts) took a second on the H100 host: paid now,
    # while the stage is still loading its data, instead of after the first log point.
    image_summary("", panels_figure([Panel(np.zeros((28, 28)), "warm-up", True)]))
    drawn = []
    while True:
        try:
            tag, panels = pickle.load(sys.stdin.buffer)
        except (EOFError, pickle.UnpicklingError):  # the end, or a request cut off by a kill
            break
        drawn.append(image_summary(tag, panels_figure(panels)))
    try:
        pickle.dump(drawn, answer)
        answer.flush()
    except BrokenPipeError:
        # The stage was killed and nobody reads the answer; leave without the traceback that
        # flushing at exit would print into the user's terminal or DVC's log.
        os._exit(1)


@contextlib.contextmanager
def _sigint_ignored():
    """SIGINT ignored in this process while the block runs (signals belong to the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class FigureRenderer:
    """Draws prediction figures in a worker process while training goes on.

    Drawing a figure and encoding its PNG takes SECONDS_PER_FIGURE of a CPU core, over the 15
    figures of a default run a sizeable part of the training loop (docs/performance.md). The
    training loop uses one core at the tutorial's batch size, so the drawing goes on another.

    The worker is a fresh interpreter that imports matplotlib and never torch. On GPU hosts
    importing torch took longer than the whole training loop, and a multiprocessing worker
    re-imports the stage's script and so torch with it. It is never a fork of the stage either:
    a fork taken after OpenMP's threads had run hung in its first tensor operation.

    Requests go down the worker's stdin from a thread, so training never waits on a busy worker;
    the worker answers once, at the end of its input, so neither side waits on the other before.
    """

    # Beyond TIMEOUT seconds plus PER_FIGURE for each figure (many times a figure's normal time)
    # the worker is taken to be stuck.
    TIMEOUT = 120
    PER_FIGURE = 1

    def __enter__(self) -> FigureRenderer:
        root = str(Path(__file__).resolve().parents[1])  # where `fashion` is imported from
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        # Ctrl-C at the terminal reaches the whole process group; the stage handles it and stops
        # the worker on its way out. The worker ignores it from its first instruction, so that no
        # traceback of its own joins the stage's message: an ignored signal stays ignored across
        # exec, and Python then leaves it ignored.
        with _sigint_ignored():
            self.worker = subprocess.Popen(
                [sys.executable, "-c", WORKER],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": path})
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        self.sender = threading.Thread(target=self._send, daemon=True)
        self.sender.start()
        self.submitted = 0
        return self

    def _send(self) -> None:
        try:
            while (request := self.requests.get()) is not None:
                pickle.dump(request, self.worker.stdin)
                self.worker.stdin.flush()
        except BrokenPipeError:
            pass  # the worker died or was stopped: results() reports it

    def __exit__(self, *exc) -> None:
        # After results() the worker has exited; after a failure nothing of it is wanted.
        self.requests.put(None)  # ends the sender, if results() did not
        if self.worker.poll() is None:
            self.worker.kill()
        self.sender.join()
        self.worker.wait()
        self.worker.stdout.close()
        with contextlib.suppress(BrokenPipeError):  # requests still buffered for a dead worker
            self.worker.stdin.close()

    def submit(self, tag: str, images: torch.Tensor, labels: torch.Tensor,
               probs: torch.Tensor) -> None:
        """Queue the figure of a batch; results() returns it in submission order."""
        self.requests.put((tag, prediction_panels(images, labels, probs)))
        self.submitted += 1

    def results(self) -> list[bytes]:
        """The Summaries of all submitted figures, in order, once the worker has drawn them."""
        self.requests.put(None)
        timeout = self.TIMEOUT + self.PER_FIGURE * self.submitted
        deadline = time.monotonic() + timeout
        stuck = FashionError(f"the figure worker had not finished after {timeout} s and was "
                             "stopped; rerun the stage, and report it if it happens again")
        self.sender.join(timeout)
        if self.sender.is_alive():  # still writing to a worker that reads nothing
            raise stuck
        try:  # closes the worker's stdin: the end of its input
            out, _ = self.worker.communicate(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise stuck from None
        if self.worker.returncode != 0:
            raise FashionError(f"the figure worker failed (exit status {self.worker.returncode}"
                               ", its error is above); rerun the stage, and report it if it "
                               "happens again")
        return pickle.loads(out)
