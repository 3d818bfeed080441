"""Fetch and verify the Fashion-MNIST files (DVC stage 'fetch')."""

import sys
from pathlib import Path

# Import fashion/ from this checkout, which is also right in the copies DVC runs experiments in.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fashion import cli, fetch  # first: cli checks this Python has its packages
import click


@click.command()
@click.option("--out", default="data/fashion-mnist", show_default=True, type=click.Path(path_type=Path),
              help="Directory for the decompressed files and their SHA256SUMS.")
@click.option("--mirror", envvar="FASHION_MNIST_MIRROR", show_envvar=True,
              help="Comma-separated sources tried in order: http(s) URLs, file:// URLs or directories "
                   "holding the .gz files. [default: the canonical mirrors]")
@click.option("--checksums", envvar="FASHION_MNIST_CHECKSUMS", show_envvar=True,
              help="A sha256sum-format file of the decompressed files' checksums, replacing the "
                   "built-in ones (for tests and private datasets).")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds to wait for a connection or the next bytes.")
@click.option("--retries", default=2, show_default=True, type=click.IntRange(min=0),
              help="Retries per source after a connection failure, with backoff.")
@click.option("--deadline", envvar="FASHION_MNIST_DEADLINE", show_envvar=True,
              default=fetch.DEADLINE, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Seconds one file may take from one source, retries included; a slower source "
                   "is given up for the next.")
@click.option("--max-bytes", default=fetch.MAX_BYTES, show_default=True, type=click.IntRange(min=1),
              help="Refuse a file larger than this, compressed or not.")
@cli.stage_command
def main(out, mirror, checksums, timeout, retries, deadline, max_bytes):
    """Download the four Fashion-MNIST files, verify their content and write them to OUT."""
    fetch.run(dest=out, mirror=mirror, checksums=checksums, timeout=timeout, retries=retries,
              max_bytes=max_bytes, deadline=deadline)


if __name__ == "__main__":
    main()
