"""Compare the workspace's pipeline outputs and metrics with HEAD's committed baseline."""

import sys
from pathlib import Path

# Import fashion/ from this checkout, like the stage scripts.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click

from fashion import cli, verify


@click.command()
@click.option("--tolerance", type=click.FloatRange(min=0), default=None,
              help="Also accept outputs whose bits differ when every metric moved by at most "
                   "this much (another CPU family, a GPU); see docs/reproduction.md.")
@cli.stage_command
def main(tolerance):
    """Say whether the workspace reproduced HEAD's dvc.lock and metrics/ bit for bit; otherwise
    list the outputs that differ, the metric deltas and the platform of each side. Exits 0 only
    for identical outputs, or with --tolerance for metrics within it."""
    result = verify.verdict(tolerance=tolerance)
    click.echo("\n".join(verify.report(result)))
    sys.exit(0 if result.passed else 1)


if __name__ == "__main__":
    main()
