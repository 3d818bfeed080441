"""Small made-up datasets in the Fashion-MNIST file format, for tests and the quick benchmark.

Each class is a bright square at its own place on a noisy background, so a few hundred SGD steps
learn it. The files are gzipped as the mirrors serve them, with a sha256sum-format checksum file
of their content to hand to FASHION_MNIST_CHECKSUMS.
"""

import gzip
from pathlib import Path

import numpy as np

from fashion import data


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">i4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def make_split(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.permutation(np.arange(n) % len(data.CLASSES)).astype(np.uint8)
    images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
    for image, label in zip(images, labels):
        row, col = 2 + 12 * (label // 5), 1 + 5 * (label % 5)
        image[row:row + 10, col:col + 6] = rng.integers(180, 256, size=(10, 6), dtype=np.uint8)
    return images, labels


def write(directory: str | Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """Write the four .gz files into `directory`; return the path of their checksum file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    checksums = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = make_split(n, rng)
        for name, array in zip(data.SPLITS[split], (images, labels)):
            content = idx_bytes(array)
            checksums[name] = data.sha256(content)
            (directory / f"{name}.gz").write_bytes(gzip.compress(content, mtime=0))
    manifest = directory / "checksums.sha256"
    manifest.write_text(data.format_checksums(checksums))
    return manifest
