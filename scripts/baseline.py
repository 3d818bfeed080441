"""Return params.yaml, dvc.lock, metrics and the pipeline's outputs to HEAD's (`make baseline`)."""

import sys
from pathlib import Path

# Import fashion/ from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click

from fashion import baseline, cli


@click.command()
@click.option("--repo", default=".", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="The DVC repository.")
@cli.stage_command
def main(repo):
    """Put back HEAD's params.yaml, dvc.lock and metrics/ (those that differ, by content), then
    the outputs that dvc.lock names, from the DVC cache (`dvc checkout`), and say what was
    restored. Code and any other uncommitted change stay as they are."""
    click.echo(baseline.summary(baseline.restore(repo)))


if __name__ == "__main__":
    main()
