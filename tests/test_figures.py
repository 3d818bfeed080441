import pytest
import torch
from torch.utils.tensorboard._utils import figure_to_image

from fashion.data import CLASSES
from fashion.figures import predictions_figure


@pytest.mark.parametrize("batch", [1, 2, 3, 4, 7])
def test_any_batch_size_shows_up_to_four_panels(batch):
    images = torch.rand(batch, 1, 28, 28) * 2 - 1
    labels = torch.arange(batch) % 10
    probs = torch.nn.functional.one_hot((labels + (torch.arange(batch) % 2)) % 10, 10).float()
    fig = predictions_figure(images, labels, probs)
    axes = fig.get_axes()
    assert len(axes) == min(4, batch)
    for i, ax in enumerate(axes):
        predicted = (i + i % 2) % 10
        assert ax.get_title().startswith(f"{CLASSES[predicted]}, 100.0%\n(label: {CLASSES[i % 10]})")
        assert ax.title.get_color() == ("green" if i % 2 == 0 else "red")
    image = figure_to_image(fig)
    assert image.shape[0] == 3 and image.shape[2] > image.shape[1] * (min(4, batch) - 1) / 2


def test_accepts_tensors_that_need_grad():
    net = torch.nn.Linear(784, 10)
    images = torch.rand(2, 1, 28, 28)
    probs = net(images.flatten(1)).softmax(1)
    assert probs.requires_grad
    assert len(predictions_figure(images, torch.tensor([0, 1]), probs).get_axes()) == 2
