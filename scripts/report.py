"""Write one self-contained HTML page comparing the experiments (`make report`)."""

import sys
from pathlib import Path

# Import fashion/ from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click

from fashion import cli, experiments, fileio, report
from fashion.errors import FashionError


@click.command()
@click.option("--repo", default=".", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="The DVC repository.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help=f"The page to write. [default: REPO/{report.OUT}]")
@cli.stage_command
def main(repo, out):
    """The `make compare` table, training-loss curves overlaid, per-class precision-recall
    curves and confusion matrices of HEAD's results and every finished experiment, read from the
    DVC cache without checking anything out. The page loads nothing from the network. Its path
    is the last line printed."""
    repo = repo.resolve()
    listing = experiments.load(repo)
    if not listing.finished:
        raise FashionError("HEAD has no results yet: run `dvc repro` (or `dvc pull`), "
                                       "then `dvc exp run`")
    document, uncached = report.page(repo, listing)
    out = (out or repo / report.OUT).resolve()
    fileio.write_bytes(out, document.encode())
    if uncached:
        click.echo("Warning: not drawn, outputs not in the DVC cache (`dvc pull`, or `dvc exp pull "
                   "REMOTE NAME` for an experiment): " + ", ".join(uncached), err=True)
    click.echo(out)


if __name__ == "__main__":
    main()
