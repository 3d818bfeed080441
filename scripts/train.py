"""Train the tutorial's network (DVC stage 'train')."""

import sys
from pathlib import Path

# Import fashion/ from this checkout, which is also right in the copies DVC runs experiments in.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fashion import cli, portable_cpu  # first: cli checks this Python has its packages
import click

if __name__ == "__main__":
    cli.quiet_ctrl_c_while_starting()  # the imports below load torch, a second's work
    portable_cpu.pin()  # PyTorch and MKL read it once, so before torch loads

from fashion import params, training


@click.command(epilog=params.epilog(training.PARAMS))
@cli.params_option
@cli.data_option
@click.option("--model", "model_path", default="models/model.pt", show_default=True,
              type=click.Path(path_type=Path), help="Where to write the trained state_dict.")
@click.option("--metrics", "metrics_path", default="metrics/train.json", show_default=True,
              type=click.Path(path_type=Path), help="Training metrics (JSON).")
@cli.provenance_option("metrics/provenance/train.json")
@click.option("--plots", "plots_path", default="plots/train_loss.csv", show_default=True,
              type=click.Path(path_type=Path), help="Loss and accuracy per log step (CSV).")
@cli.logdir_option("runs/train")
@cli.stage_command
def main(params_path, data_dir, model_path, metrics_path, provenance_path, plots_path, logdir):
    """Train with SGD and momentum; every log_every training images, and at the end, log the
    running loss, accuracy, learning rate and the 'predictions vs. actuals' figure.
    """
    p = params.load(params_path, training.PARAMS)
    training.run(params=p, data_dir=data_dir, model_path=model_path, metrics_path=metrics_path,
                 provenance_path=provenance_path, plots_path=plots_path, logdir=logdir)


if __name__ == "__main__":
    main()
