"""A pytest plugin for `make mutation` only (pyproject.toml's [tool.mutmut]).

While mutmut records which tests call each function, MUTANT_UNDER_TEST is "stats", and a stage
run as a subprocess inherits it: its code would then record calls in a process whose records are
lost, reading a config it cannot find from the subprocess's working directory. The variable is
taken out of the environment for that run; mutmut keeps its own copy in this process. While a
mutant is tested, the variable stays, so that the subprocesses run the mutant too.
"""

import os


def pytest_configure(config):
    if os.environ.get("MUTANT_UNDER_TEST") == "stats":
        del os.environ["MUTANT_UNDER_TEST"]
