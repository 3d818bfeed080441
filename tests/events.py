"""Reading TensorBoard logdirs back, as TensorBoard itself reads them."""

from collections import defaultdict
from pathlib import Path

from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader


def events(logdir: Path) -> list:
    return [event for path in sorted(Path(logdir).glob("*tfevents*"))
            for event in LegacyEventFileLoader(str(path)).Load()]


def summaries(logdir: Path) -> dict[str, list]:
    """tag -> [(step, summary value)] in file order."""
    found = defaultdict(list)
    for event in events(logdir):
        if event.HasField("summary"):
            for value in event.summary.value:
                found[value.tag].append((event.step, value))
    return dict(found)


def scalars(logdir: Path, tag: str) -> list[tuple[int, float]]:
    return [(step, value.simple_value) for step, value in summaries(logdir)[tag]]
