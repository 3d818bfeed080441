"""The `docker run` options that hand a local copy of the data to the container (make docker-*)."""

import shlex
from pathlib import Path

import click


def options(mirror: str, checksums: str) -> list[str]:
    """Mount each local directory of the mirror list, and the checksum file unless it lies in one,
    read-only at its resolved host path, and pass both variables on rewritten to those paths.
    URLs and paths that do not exist here pass through unchanged."""
    mounts, sources = [], []
    for item in (part.strip() for part in mirror.split(",")):
        path = Path(item.removeprefix("file://"))
        if item and path.is_dir():
            path = path.resolve()
            if str(path) not in mounts:
                mounts.append(str(path))
            item = f"file://{path}" if item.startswith("file://") else str(path)
        sources.append(item)
    argv = [arg for path in mounts for arg in ("-v", f"{path}:{path}:ro")]
    if any(sources):
        argv += ["-e", f"FASHION_MNIST_MIRROR={','.join(sources)}"]
    if checksums and Path(checksums).is_file():
        checksums = str(Path(checksums).resolve())
        if str(Path(checksums).parent) not in mounts:
            argv += ["-v", f"{checksums}:{checksums}:ro"]
    if checksums:
        argv += ["-e", f"FASHION_MNIST_CHECKSUMS={checksums}"]
    return argv


@click.command()
@click.option("--mirror", default="", help="FASHION_MNIST_MIRROR: comma-separated URLs and directories.")
@click.option("--checksums", default="", help="FASHION_MNIST_CHECKSUMS: a sha256sum-format file.")
def main(mirror, checksums):
    """Print the options, shell-quoted on one line, for the Makefile to put into `docker run`."""
    click.echo(shlex.join(options(mirror, checksums)))


if __name__ == "__main__":
    main()
