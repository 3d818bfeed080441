"""The Fashion-MNIST files: their names, checksums, reading, normalisation and batch order."""

from __future__ import annotations  # torch appears in annotations without being imported

import hashlib
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fashion import dvccache
from fashion.errors import DataError

# torch is imported inside the functions that call it: the fetch stage needs only the names
# and checksums here, and importing torch would cost it a few seconds per run.
if TYPE_CHECKING:
    import torch

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle Boot")

# File-name forms of the class names, for per-class plot files ("T-shirt/top" -> "t-shirt-top").
CLASS_SLUGS = tuple(name.lower().replace("/", "-").replace(" ", "-") for name in CLASSES)

# transforms.Normalize((0.5,), (0.5,)) after ToTensor, as in the tutorial: pixels map to [-1, 1].
MEAN, STD = 0.5, 0.5

SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FILES = tuple(name for pair in SPLITS.values() for name in pair)

# SHA-256 of the decompressed canonical files. Mirrors differ in their gzip headers (Debian's
# package rewrote them), so the content is what is verified, never the .gz bytes.
SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

# Written by fetch beside the files, in `sha256sum` format; later stages verify against it.
MANIFEST = "SHA256SUMS"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def format_checksums(checksums: dict[str, str]) -> str:
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(checksums.items()))


def parse_checksums(text: str, source: str) -> dict[str, str]:
    """Read `sha256sum` output: one `<64 hex digits>  <file name>` per line."""
    checksums = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        digest, name = parts[0].lower(), parts[-1].lstrip("*")
        if len(parts) != 2 or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise DataError(f"{source}, line {number}: expected '<sha256 hex>  <file name>', "
                            f"got {line.strip()!r}")
        checksums[name] = digest
    return checksums


def read_checksums(path: Path) -> dict[str, str]:
    """parse_checksums of a file. Bytes that are not text (a damaged file, or a binary given by
    mistake) are refused like a malformed line, not left to crash the decoder."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not a sha256sum-format text file (byte {exc.start} is not "
                        "UTF-8)") from None
    return parse_checksums(text, str(path))


def read_verified(data_dir: Path, name: str) -> bytes:
    """A dataset file's bytes, refused unless they match the checksum fetch recorded."""
    manifest = data_dir / MANIFEST
    if not manifest.is_file():
        raise DataError(f"{data_dir} holds no fetched dataset ({MANIFEST} missing): "
                        "run `dvc repro fetch` first")
    expected = read_checksums(manifest).get(name)
    path = data_dir / name
    if expected is None:
        raise DataError(f"{manifest} has no checksum for {name}: run `dvc repro --force fetch`")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path} is missing: run `dvc repro --force fetch`") from None
    if sha256(data) != expected:
        damaged = dvccache.damaged_copy(path, data)
        if damaged:
            raise DataError(damaged)
        raise DataError(f"{path} does not match its checksum in {MANIFEST} (changed or truncated "
                        f"since it was fetched): run `dvc checkout --force {data_dir}` or `dvc "
                        "repro --force fetch`")
    return data


def parse_idx(data: bytes, source: str) -> np.ndarray:
    """Decode an IDX file of unsigned bytes (the MNIST format).

    Written out rather than taken from torchvision because importing torchvision costs the train
    and evaluate stages about a second each, and the format is a 4-byte magic number (0, 0, 0x08
    for unsigned bytes, the number of dimensions), big-endian int32 sizes, then the values.
    """
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or not 1 <= data[3] <= 3:
        raise DataError(f"{source} is not an IDX file of unsigned bytes")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: {len(data)} bytes, too few for the header of an IDX file")
    shape = tuple(int(d) for d in np.frombuffer(data, ">i4", ndim, 4))
    if min(shape) < 0 or len(data) != header + math.prod(shape):
        raise DataError(f"{source}: {len(data)} bytes do not fit the shape {shape} in its header")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def load_split(data_dir: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 28, 28) as uint8 and labels (N,) as int64 of the 'train' or 'test' split."""
    data_dir = Path(data_dir)
    images_name, labels_name = SPLITS[split]
    images = parse_idx(read_verified(data_dir, images_name), images_name)
    labels = parse_idx(read_verified(data_dir, labels_name), labels_name)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1:
        raise DataError(f"{data_dir}: {split} images must be N x 28 x 28 and labels a vector")
    if len(images) == 0:
        raise DataError(f"{data_dir}: the {split} split holds no images")
    if len(images) != len(labels):
        raise DataError(f"{data_dir}: {len(images)} {split} images but {len(labels)} labels")
    if labels.size and labels.max() >= len(CLASSES):
        raise DataError(f"{data_dir}: {labels_name} has a label >= {len(CLASSES)}")
    import torch

    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) to float (N, 1, 28, 28), with the arithmetic of ToTensor and Normalize."""
    import torch

    # In place on one copy: the 60,000 training images are 188 MB as floats, and a fresh tensor
    # per operation would allocate and fill that much again at each step.
    return images.unsqueeze(1).to(torch.float32, copy=True).div_(255).sub_(MEAN).div_(STD)


def unnormalize(images: torch.Tensor) -> torch.Tensor:
    """Back to [0, 1] for display."""
    return images * STD + MEAN


def epoch_batches(n: int, batch_size: int, generator: torch.Generator,
                  device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """Index tensors of one shuffled epoch, on `device`; the last batch is short when batch_size
    does not divide n. The order is drawn on the CPU, so it is the same for every device."""
    import torch

    return list(torch.randperm(n, generator=generator).to(device).split(batch_size))
