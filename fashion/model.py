"""The tutorial's network and how its weights are saved and loaded."""

import io
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from fashion import fileio
from fashion.data import CLASSES
from fashion.determinism import derived_seed
from fashion.errors import FashionError


class Net(nn.Module):
    """LeNet-style CNN of the tutorial, with its layer and parameter names."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)         # 1x28x28 -> 6x24x24, pooled to 6x12x12
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)        # -> 16x8x8, pooled to 16x4x4
        self.fc1 = nn.Linear(16 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def initial_net(seed: int) -> Net:
    """A Net with PyTorch's default initialisation, drawn from the seed's 'init' stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(seed, "init"))
        return Net()


def serialize(net: Net) -> bytes:
    """The state_dict on the CPU, as torch.save writes it; the same weights give the same bytes."""
    buffer = io.BytesIO()  # a file name would end up inside the zip archive; a buffer's does not
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buffer)
    return buffer.getvalue()


def save(net: Net, path: str | Path) -> None:
    fileio.write_bytes(path, serialize(net))


def load(path: str | Path) -> Net:
    """Load weights saved by `save`. weights_only=True: a weights file cannot run code."""
    path = Path(path)
    # --force: DVC will not overwrite a file that differs from its record without it.
    retrain = (f"restore it with `dvc checkout --force {path}` or retrain with `dvc repro --force "
               "--single-item train`")
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise FashionError(f"{path} not found: run `dvc repro train` first") from None
    # Any other OSError (permissions, a directory) reaches the stage, which prints the OS's reason.
    try:
        state = torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
    except Exception:
        # Whatever torch raises means the bytes are not weights: UnpicklingError, BadZipFile,
        # RuntimeError, OSError for a cut archive, and from the weights-only unpickler IndexError,
        # KeyError and others. Its messages (one advises weights_only=False) do not help here.
        raise FashionError(f"{path} is not a loadable weights file (damaged, or not written by "
                           f"the train stage): {retrain}") from None
    net = Net()
    expected = {name: tuple(t.shape) for name, t in net.state_dict().items()}
    found = ({name: tuple(t.shape) for name, t in state.items()}
             if isinstance(state, dict) and all(isinstance(t, torch.Tensor) for t in state.values())
             else {})
    if found != expected:
        differ = sorted(name for name in expected.keys() | found.keys()
                        if expected.get(name) != found.get(name))
        more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
        verb = "differs" if len(differ) == 1 else "differ"
        raise FashionError(f"{path} holds weights of another architecture ({', '.join(differ[:3])}"
                           f"{more} {verb} from the Net's): {retrain}")
    net.load_state_dict(state)
    return net
