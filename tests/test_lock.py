"""The lock: requirements-lock.txt pins, with hashes, every package that `make setup` and the image
install; it agrees with the two short lists it is made from, and the running venv holds exactly it."""

import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

LOCK = ROOT / "requirements-lock.txt"
INPUTS = ("requirements.txt", "requirements-dev.in")


def locked(text: str) -> dict[str, tuple[str, list[str]]]:
    """{name: (version, hashes)} of a lock written by `uv pip compile --generate-hashes`."""
    pins = {}
    for entry in re.split(r"\n(?=\S)", text):
        first = entry.split("\\", 1)[0].strip()
        if not first or first.startswith("#"):
            continue
        requirement = Requirement(first)
        [spec] = requirement.specifier
        assert spec.operator == "==", first
        pins[canonicalize_name(requirement.name)] = (spec.version, re.findall(r"--hash=sha256:(\w{64})", entry))
    return pins


def direct_pins() -> dict[str, str]:
    pins = {}
    for name in INPUTS:
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                requirement = Requirement(line)
                pins[canonicalize_name(requirement.name)] = next(iter(requirement.specifier)).version
    return pins


def test_the_lock_pins_each_direct_pin_and_hashes_every_package():
    lock = locked(LOCK.read_text())
    assert len(lock) > 100  # the dependencies of dvc, torch, tensorboard and matplotlib too
    for name, version in direct_pins().items():
        assert lock.get(name, ("missing",))[0] == version, f"{name}=={version}: run `make lock`"
    assert [name for name, (_, hashes) in lock.items() if not hashes] == []
    # pip itself is locked, so `make setup` and the image run the same installer
    assert {"pip", "uv", "setuptools", "torch", "nvidia-cublas"} <= lock.keys()


def test_the_lock_parser_reads_names_versions_and_hashes():
    text = ("# header\nFoo_Bar==1.0 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:"
            + "b" * 64 + "\n    # via\n    #   x\nzc.lockfile==4.0 \\\n    --hash=sha256:" + "c" * 64 + "\n")
    assert locked(text) == {"foo-bar": ("1.0", ["a" * 64, "b" * 64]), "zc-lockfile": ("4.0", ["c" * 64])}


def installed() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}


@pytest.mark.skipif(not any(Path(sys.prefix).glob(".installed-*")),
                    reason="not a venv installed from the lock (`make setup` and the image leave a "
                           ".installed-* stamp in it); on other platforms the lock does not apply")
def test_the_environment_holds_exactly_the_lock():
    lock = {name: version for name, (version, _) in locked(LOCK.read_text()).items()}
    have = installed()
    missing = {n: v for n, v in lock.items() if have.get(n) != v}
    extra = {n: v for n, v in have.items() if n not in lock}
    assert (missing, extra) == ({}, {}), (
        f"locked but not installed as locked: {missing}; installed but not locked: {extra}. "
        "`make setup` reinstalls the venv from the lock")
