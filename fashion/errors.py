"""Errors a user can fix. Stage commands print them as one line and exit non-zero."""

import contextlib


class FashionError(Exception):
    """A problem with the user's input or environment; the message says what to do."""


class ParamsError(FashionError):
    """params.yaml holds a key or value the pipeline does not accept."""


class DataError(FashionError):
    """The dataset is missing, damaged or does not match its checksums."""


class FetchError(FashionError):
    """No source delivered a verified copy of a dataset file."""


class TrainingError(FashionError):
    """Training cannot go on, for example because the loss diverged."""


@contextlib.contextmanager
def memory_errors_explained(device, batch_size: int | None = None):
    """torch running out of memory, a traceback otherwise, as one sentence saying what frees some:
    a smaller batch where there is one, and on a GPU what else holds its memory."""
    import torch  # here: the fetch stage imports this module and must not load torch

    remedies = [f"lower batch_size (now {batch_size})"] if batch_size else []
    if torch.device(device).type == "cuda":
        remedies += ["stop the other processes that hold GPU memory (nvidia-smi lists them)",
                     "set device: cpu"]
    else:
        remedies.append("close other programs")
    message = f"out of {device} memory; " + ", or ".join(remedies)
    try:
        yield
    except torch.OutOfMemoryError:
        raise FashionError(message) from None
    except RuntimeError as exc:
        if "can't allocate memory" not in str(exc):  # the CPU allocator's plain RuntimeError
            raise
        raise FashionError(message) from None
