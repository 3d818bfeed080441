"""TensorBoard views before training (DVC stage 'visualize')."""

import sys
from pathlib import Path

# Import fashion/ from this checkout, which is also right in the copies DVC runs experiments in.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fashion import cli, portable_cpu  # first: cli checks this Python has its packages
import click

if __name__ == "__main__":
    cli.quiet_ctrl_c_while_starting()  # the imports below load torch, a second's work
    portable_cpu.pin()  # PyTorch and MKL read it once, so before torch loads

from fashion import params, visualize


@click.command(epilog=params.epilog(visualize.PARAMS))
@cli.params_option
@cli.data_option
@cli.logdir_option("runs/visualize")
@cli.stage_command
def main(params_path, data_dir, logdir):
    """Log the first training batch as an image grid, the model graph and the embedding projector."""
    p = params.load(params_path, visualize.PARAMS)
    visualize.run(params=p, data_dir=data_dir, logdir=logdir)


if __name__ == "__main__":
    main()
