"""The matplotlib figure of the tutorial's 'predictions vs. actuals' view."""

import torch
from matplotlib.figure import Figure

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
