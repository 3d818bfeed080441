"""Errors a user can fix. Stage commands print them as one line and exit non-zero."""


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
