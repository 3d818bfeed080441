"""A pytest plugin for `make mutation` only (pyproject.toml's [tool.mutmut]).

While mutmut records which tests call each function, MUTANT_UNDER_TEST is "stats", and a stage
run as a subprocess inherits it: its code would then record calls in a process whose records are
lost, reading a config it cannot find from the subprocess's working directory. The variable is
taken out of the environment for that run; mutmut keeps its own copy in this process. While a
mutant is tested, the variable stays, so that the subprocesses run the mutant too.

A function called while a module is imported (`fileio.matching` for a module's constant) has
importlib's frames above it, named "<frozen importlib._bootstrap>", which mutmut 3.8.1 resolves as
files to count max_stack_depth and fails on; such a call is made at import, by no test, so it is
not recorded.
"""

import os


def pytest_configure(config):
    if os.environ.get("MUTANT_UNDER_TEST") == "stats":
        del os.environ["MUTANT_UNDER_TEST"]
        from mutmut.mutation import trampoline

        record = trampoline.record_trampoline_hit

        def record_unless_importing(name, caller=None):
            try:
                record(name, caller=caller)
            except FileNotFoundError:  # a frame without a file: importlib's, above an import
                pass

        trampoline.record_trampoline_hit = record_unless_importing
