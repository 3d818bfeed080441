"""Compare the baseline and its DVC experiments in one table (`make compare`)."""

import sys
from pathlib import Path

# Import fashion/ from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click

from fashion import cli, compare, experiments
from fashion.errors import FashionError


@click.command()
@click.option("--repo", default=".", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="The DVC repository.")
@click.option("--all", "wide", is_flag=True,
              help="Every param and more metrics, wider than 100 columns.")
@cli.stage_command
def main(repo, wide):
    """HEAD's results and every finished experiment of `dvc exp show`, one row each, sorted by
    test accuracy with the best marked; experiments with the same params and code are shown
    once. Nothing is written."""
    listing = experiments.load(repo.resolve())
    if not listing.finished:
        raise FashionError("HEAD has no results yet: run `dvc repro` (or `dvc pull`), "
                                       "then `dvc exp run`")
    click.echo(compare.report(listing, wide))


if __name__ == "__main__":
    main()
