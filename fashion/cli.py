"""What every stage command shares: options, on/off switches read from the environment, and the
way failures reach the user.

A FashionError or an OSError (a path that cannot be read or written) prints one line and exits 1;
Ctrl-C exits 130 and SIGTERM 143, after the stage's staged outputs are cleaned up, unless they
came after every output had been replaced: then the stage exits 0 and says so, or, once Python
has begun to exit, ignores them. FASHION_DEBUG=1
shows the traceback instead. Ctrl-C before the command starts, while the script imports torch,
ends with one line too: see quiet_ctrl_c_while_starting.
"""

import atexit
import functools
import importlib.util
import os
import signal
import sys
from pathlib import Path

# A stage run by a Python without the project's packages (`.venv/bin/dvc repro` with the shell's
# python first on PATH) stops in one line saying what to do, not in a traceback; scripts import
# this module first.
_MISSING = [name for name in ("click", "numpy", "ruamel", "torch")
            if importlib.util.find_spec(name) is None]
if _MISSING:
    sys.exit(f"Error: {sys.executable} has no {', '.join(_MISSING)}: run the stages with the "
             "project's venv, through `make repro`, or `. .venv/bin/activate` first "
             "(`make setup` creates it)")

import click  # noqa: E402

from fashion import fileio
from fashion.errors import FashionError


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that cleanup code runs."""


def _terminate(signum, frame):
    raise Terminated()


def _interrupted_while_starting(signum, frame):
    # KeyboardInterrupt would unwind through torch's half-done import and print its traceback.
    # Nothing has been written yet, so there is nothing to clean up: leave at once.
    sys.stderr.write("Interrupted before the stage started; nothing was written.\n")
    sys.stderr.flush()
    os._exit(130)


def switch(name: str, default: bool) -> bool:
    """An environment variable set to 1 (on) or 0 (off); unset or empty, the default. Any other
    value is refused, not read as either: FASHION_CUDA_GRAPH=off must not leave the graph on.
    The switches change how a stage computes or reports, never what it writes."""
    value = os.environ.get(name, "")
    if value not in ("", "0", "1"):
        raise FashionError(f"{name} is {value!r}; set it to 1 or 0, or unset it")
    return default if value == "" else value == "1"


def quiet_ctrl_c_while_starting() -> None:
    """Make Ctrl-C exit with one line until stage_command's wrapper runs. For a script's
    `__main__` only: an importing process (a test) keeps its own handler."""
    # A SIGINT the parent had set to be ignored (a background job) stays ignored.
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted_while_starting)


def _replaced_none(what: str) -> str:
    if os.environ.get("DVC_STAGE"):  # set by DVC for the commands it runs
        # DVC deletes a stage's outputs before running it: there is nothing left to keep.
        return (f"{what}; this stage wrote none of its outputs, and DVC had removed the previous "
                "ones before running it: `dvc checkout` brings them back.")
    return f"{what}; this stage replaced none of its outputs."


def _finished(signum, frame):
    # Every output is already new and complete: nothing is left to stop or undo.
    what = "Interrupted" if signum == signal.SIGINT else "Terminated"
    sys.stderr.write(f"{what} after this stage had replaced all its outputs; they are new and "
                     "complete.\n")
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


def _ignore_interrupts() -> None:
    for signum in fileio.INTERRUPTS:
        signal.signal(signum, signal.SIG_IGN)


def _ignore_interrupts_once_outputs_are_replaced() -> None:
    for signum in fileio.INTERRUPTS:
        signal.signal(signum, _finished)
    # Once Python starts to exit it runs no more handlers and sets these signals back to their
    # default, which kills the process (exit status -2) while it tears down its modules, most of
    # a second after torch was loaded; an ignored signal stays ignored through that.
    atexit.unregister(_ignore_interrupts)
    atexit.register(_ignore_interrupts)


def stage_command(func=None, *, ends_with_outputs: bool = True):
    """Wrap a click command's body so user-facing failures end in one line, not a traceback.

    A stage's work ends when its outputs are replaced (`ends_with_outputs`): a Ctrl-C or SIGTERM
    after that moment ends it at once with success and says so, instead of reporting outputs that
    are in fact new as untouched. A command that goes on working after writing (a server) passes
    ends_with_outputs=False.
    """
    if func is None:
        return functools.partial(stage_command, ends_with_outputs=ends_with_outputs)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        signal.signal(signal.SIGTERM, _terminate)
        if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # cleanup needs the exception
        if ends_with_outputs:
            fileio.after_outputs = _ignore_interrupts_once_outputs_are_replaced
        try:
            if not switch("FASHION_DEBUG", default=False):
                return func(*args, **kwargs)
        except FashionError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            raise click.ClickException(f"{exc.strerror or exc}{where}") from None
        except KeyboardInterrupt:
            click.echo(_replaced_none("Interrupted"), err=True)
            sys.exit(130)
        except Terminated:
            click.echo(_replaced_none("Terminated"), err=True)
            sys.exit(143)
        return func(*args, **kwargs)  # FASHION_DEBUG=1: failures show their traceback

    return wrapper


def data_option(func):
    return click.option("--data", "data_dir", default="data/fashion-mnist", show_default=True,
                        type=click.Path(path_type=Path),
                        help="Directory written by the fetch stage.")(func)


def logdir_option(default: str):
    return click.option("--logdir", default=default, show_default=True,
                        type=click.Path(path_type=Path),
                        help="TensorBoard logdir to write (replaced on success).")


def provenance_option(default: str):
    return click.option("--provenance", "provenance_path", default=default, show_default=True,
                        type=click.Path(path_type=Path),
                        help="Code, params, data, software and hardware of this run (JSON).")


def params_option(func):
    return click.option("--params", "params_path", default="params.yaml", show_default=True,
                        type=click.Path(dir_okay=False),
                        help="The params file; the whole file is validated first.")(func)
