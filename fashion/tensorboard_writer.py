"""A SummaryWriter whose logdir has the same bytes whenever the logged values are the same.

TensorBoard names event files after the time, host and process and stamps every record with the
wall time, so two identical runs would give logdirs with different hashes: DVC would see a changed
output on every rerun and `dvc pull` could never be checked against a rerun. TensorBoard has no
switch for this, so on close the events are rewritten into one file with zero wall times
(training time is in the stage's output and the benchmark, not in the logs), named after its
contents. The name must change with the contents: a running TensorBoard reads a file it knows
only from where it stopped, so a rerun stage's file under the old name would go unnoticed,
while a new name replaces the old run's data within one reload. The logdir is built beside its
destination and moved into place only when the stage succeeds.
"""

import contextlib
import hashlib
import io
import threading
from collections.abc import Iterator
from pathlib import Path

from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.graph_pb2 import GraphDef
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread
from tensorboard.summary.writer.record_writer import RecordWriter
from torch.utils.tensorboard import SummaryWriter

from fashion import fileio

EVENT_FILE_PREFIX = "events.out.tfevents.0000000000.fashion."  # then 16 hex digits of SHA-256
# What a stage's logdir holds: canonical event files, and the embedding projector's files
# (<step>/<tag>/... and its config). Only a directory of these is replaced by a new logdir.
LOGDIR_FILES = fileio.matching(f"{EVENT_FILE_PREFIX}*", f"*/{EVENT_FILE_PREFIX}*",
                               "projector_config.pbtxt", "[0-9][0-9][0-9][0-9][0-9]/*/metadata.tsv",
                               "[0-9][0-9][0-9][0-9][0-9]/*/sprite.png",
                               "[0-9][0-9][0-9][0-9][0-9]/*/tensors.tsv")


def canonicalize(logdir: Path) -> None:
    """Merge the event files of each directory under `logdir` into one file with zero wall times,
    named EVENT_FILE_PREFIX and the start of its SHA-256."""
    directories = sorted({p.parent for p in logdir.rglob("*tfevents*")})
    for directory in directories:
        sources = sorted(directory.glob("*tfevents*"))
        events = []
        for source in sources:
            for record in RawEventFileLoader(str(source)).Load():
                event = Event.FromString(record)  # as written: no conversion to newer summary forms
                event.wall_time = 0.0
                if event.HasField("graph_def"):
                    # Serialised by the writer with its attribute maps in arbitrary order.
                    graph = GraphDef.FromString(event.graph_def)
                    event.graph_def = graph.SerializeToString(deterministic=True)
                events.append(event)
            source.unlink()
        records = io.BytesIO()
        writer = RecordWriter(records)
        for event in events:
            writer.write(event.SerializeToString(deterministic=True))
        content = records.getvalue()
        digest = hashlib.sha256(content).hexdigest()[:16]
        (directory / f"{EVENT_FILE_PREFIX}{digest}").write_bytes(content)


@contextlib.contextmanager
def _writer_thread_errors_left_to_the_stage() -> Iterator[None]:
    """Keep the traceback of a failed write (a full disk) in the writer's thread off the screen:
    the writer raises the same error again in the stage's thread, which reports it in one line."""
    previous = threading.excepthook

    def hook(args):
        if not isinstance(args.thread, _AsyncWriterThread):
            previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


@contextlib.contextmanager
def run_writer(logdir: str | Path, outputs: fileio.Outputs | None = None) -> Iterator[SummaryWriter]:
    """A SummaryWriter for one stage's logdir, which replaces `logdir` only on success: together
    with the stage's other `outputs` where given."""
    with contextlib.nullcontext(outputs) if outputs else fileio.outputs() as staged:
        staging = staged.directory(logdir, LOGDIR_FILES)
        with fileio.naming(logdir), _writer_thread_errors_left_to_the_stage():
            writer = SummaryWriter(str(staging))
            try:
                yield writer
            finally:
                writer.close()
            canonicalize(staging)


def add_serialized_summary(writer: SummaryWriter, summary: bytes, step: int) -> None:
    """Write a Summary built elsewhere (figures.image_summary) as add_figure would have.

    SummaryWriter's add_* methods all build their Summary in the calling process; this is the
    one step of add_image that remains once the figure was drawn and encoded in a worker.
    """
    writer._get_file_writer().add_summary(Summary.FromString(summary), step)
