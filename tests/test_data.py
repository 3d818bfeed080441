import hashlib
import subprocess

import numpy as np
import pytest
import torch

from fashion import data, synthetic
from fashion.errors import DataError


def test_load_split_shapes_and_types(data_dir):
    images, labels = data.load_split(data_dir, "train")
    assert images.shape == (200, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (200,) and labels.dtype == torch.int64
    assert set(labels.tolist()) == set(range(10))
    assert data.load_split(data_dir, "test")[0].shape == (100, 28, 28)


def test_a_changed_file_is_refused_by_name(data_dir):
    path = data_dir / "train-images-idx3-ubyte"
    content = bytearray(path.read_bytes())
    content[100] ^= 1
    path.write_bytes(bytes(content))
    with pytest.raises(DataError, match="train-images-idx3-ubyte does not match its checksum"):
        data.load_split(data_dir, "train")


def test_a_truncated_file_is_refused(data_dir):
    path = data_dir / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte does not match"):
        data.load_split(data_dir, "test")


def test_missing_data_says_to_fetch(tmp_path):
    with pytest.raises(DataError, match="run `dvc repro fetch` first"):
        data.load_split(tmp_path, "train")


def test_parse_idx_checks_magic_and_size():
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    encoded = synthetic.idx_bytes(array)
    assert np.array_equal(data.parse_idx(encoded, "x"), array)
    with pytest.raises(DataError, match="not an IDX file"):
        data.parse_idx(b"<html>" + encoded, "x")
    with pytest.raises(DataError, match="do not fit the shape"):
        data.parse_idx(encoded[:-1], "x")
    # Malformed headers: cut short, and a negative size whose product still fits the length.
    with pytest.raises(DataError, match="too few for the header"):
        data.parse_idx(b"\x00\x00\x08\x03\x00\x00\x00\x01", "x")
    with pytest.raises(DataError, match="do not fit the shape"):
        data.parse_idx(b"\x00\x00\x08\x02" + (-1).to_bytes(4, "big", signed=True)
                       + (-2).to_bytes(4, "big", signed=True) + b"\x00\x00", "x")


def test_parse_checksums_rejects_malformed_lines():
    good = "a" * 64 + "  train-images-idx3-ubyte\n"
    assert data.parse_checksums(good, "f") == {"train-images-idx3-ubyte": "a" * 64}
    for bad in ("abc  file", "g" * 64 + "  file", "a" * 64 + "  two  files"):
        with pytest.raises(DataError, match="line 2: expected"):
            data.parse_checksums(f"# sha256sum output\n{bad}\n", "f")


def rewrite(data_dir, name: str, array: np.ndarray) -> None:
    """Replace one data file, with its checksum in the manifest: a private dataset's files."""
    content = synthetic.idx_bytes(array)
    (data_dir / name).write_bytes(content)
    manifest = data.read_checksums(data_dir / data.MANIFEST)
    manifest[name] = data.sha256(content)
    (data_dir / data.MANIFEST).write_text(data.format_checksums(manifest))


@pytest.mark.parametrize("name, array, message", [
    ("train-labels-idx1-ubyte", np.full(200, 10, np.uint8), "has a label >= 10"),
    ("train-labels-idx1-ubyte", np.zeros(199, np.uint8), "200 train images but 199 labels"),
    ("train-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8), "the train split holds no images"),
    ("train-images-idx3-ubyte", np.zeros((200, 32, 32), np.uint8), "must be N x 28 x 28"),
], ids=["label-10", "count-mismatch", "empty", "32x32"])
def test_a_verified_but_unusable_dataset_is_refused(data_dir, name, array, message):
    rewrite(data_dir, name, array)
    with pytest.raises(DataError, match=message):
        data.load_split(data_dir, "train")


def test_normalize_matches_torchvision_transforms():
    import torchvision.transforms as T
    from PIL import Image

    images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    tutorial = T.Compose([T.ToTensor(), T.Normalize((0.5,), (0.5,))])
    expected = torch.stack([tutorial(Image.fromarray(img.numpy(), mode="L")) for img in images])
    assert torch.equal(data.normalize(images), expected)


def test_epoch_batches_cover_every_index_once_and_repeat_with_the_seed():
    def order(seed):
        return data.epoch_batches(10, 4, torch.Generator().manual_seed(seed))

    batches = order(1)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    assert all(torch.equal(a, b) for a, b in zip(batches, order(1)))
    assert not all(torch.equal(a, b) for a, b in zip(batches, order(2)))


def test_a_binary_mode_sha256sum_file_is_read(tmp_path):
    # `sha256sum -b` marks each name with '*': the reference here is the tool itself.
    for name, content in (("a-file", b"one"), ("X-file", b"two")):
        (tmp_path / name).write_bytes(content)
    text = subprocess.run(["sha256sum", "-b", "a-file", "X-file"], cwd=tmp_path, check=True,
                          capture_output=True, text=True).stdout
    assert "*a-file" in text
    assert data.parse_checksums(text, "sums") == {"a-file": hashlib.sha256(b"one").hexdigest(),
                                                  "X-file": hashlib.sha256(b"two").hexdigest()}


def test_checksum_files_allow_indented_comments_and_name_themselves_in_errors(tmp_path):
    text = f"  # made by sha256sum\n{'a' * 64}  train-images-idx3-ubyte\n"
    assert data.parse_checksums(text, "f") == {"train-images-idx3-ubyte": "a" * 64}
    path = tmp_path / "sums"
    path.write_text("abc  file\n")
    with pytest.raises(DataError) as refused:
        data.read_checksums(path)
    assert str(refused.value) == f"{path}, line 1: expected '<sha256 hex>  <file name>', got 'abc  file'"
    path.write_bytes(b"\x1f\x8b\x08\x00")  # a .gz given by mistake
    with pytest.raises(DataError) as refused:
        data.read_checksums(path)
    assert str(refused.value) == f"{path} is not a sha256sum-format text file (byte 1 is not UTF-8)"


def test_each_problem_with_a_fetched_file_is_one_sentence_saying_what_to_run(tmp_path, data_dir):
    def refusal(split="train"):
        with pytest.raises(DataError) as refused:
            data.load_split(data_dir, split)
        return str(refused.value)

    with pytest.raises(DataError) as refused:
        data.load_split(tmp_path / "none", "train")
    assert str(refused.value) == (f"{tmp_path / 'none'} holds no fetched dataset (SHA256SUMS missing): "
                                  "run `dvc repro fetch` first")
    images = data_dir / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-1])
    assert refusal() == (f"{images} does not match its checksum in SHA256SUMS (changed or truncated "
                         f"since it was fetched): run `dvc checkout --force {data_dir}` or `dvc repro --force fetch`")
    images.unlink()
    assert refusal() == f"{images} is missing: run `dvc repro --force fetch`"
    manifest = data_dir / data.MANIFEST
    manifest.write_text("".join(line + "\n" for line in manifest.read_text().splitlines()
                                if "t10k-labels" not in line))
    assert refusal("test") == f"{manifest} has no checksum for t10k-labels-idx1-ubyte: run `dvc repro --force fetch`"


@pytest.mark.parametrize("content", [
    b"", b"\x00\x00",                          # too short for the magic number
    b"\x00\x00\x09\x01" + b"\x00" * 8,          # signed bytes (0x09), not unsigned
    b"\x00\x00\x08\x04" + b"\x00\x00\x00\x01" * 4 + b"\x00",  # four dimensions
], ids=["empty", "short", "signed", "4-d"])
@pytest.mark.parametrize("name", ["train-labels-idx1-ubyte", "train-images-idx3-ubyte"])
def test_what_is_not_an_idx_file_of_unsigned_bytes_is_refused_by_name(data_dir, content, name):
    (data_dir / name).write_bytes(content)
    manifest = data.read_checksums(data_dir / data.MANIFEST)
    manifest[name] = data.sha256(content)
    (data_dir / data.MANIFEST).write_text(data.format_checksums(manifest))
    with pytest.raises(DataError) as refused:
        data.load_split(data_dir, "train")
    assert str(refused.value) == f"{name} is not an IDX file of unsigned bytes"


def test_a_header_alone_is_too_short_not_foreign():
    with pytest.raises(DataError) as refused:
        data.parse_idx(b"\x00\x00\x08\x01", "x")
    assert str(refused.value) == "x: 4 bytes, too few for the header of an IDX file"
