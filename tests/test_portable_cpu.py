"""The portable CPU pin (fashion/portable_cpu.py): the computing stages give the same bytes
whatever vector instructions the CPU has, simulated here on one AVX-512 machine, and MKL runs the
branch that Intel documents as the same on Intel and other x86 CPUs."""

import json
import re
import sys
from pathlib import Path

import pytest

from fashion import portable_cpu
from tests.conftest import ROOT, run, write_params
from tests.faults import assert_failed

STAGES = ("visualize", "train", "evaluate")
# What PyTorch and MKL do by themselves on an AVX2-only CPU, and on an AVX-512 one.
AVX2_HOST = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
AVX512_HOST = {"ATEN_CPU_CAPABILITY": "avx512"}
needs_avx512 = pytest.mark.skipif(
    portable_cpu.own_capability() != "avx512",
    reason="simulating both hosts needs a CPU with AVX-512; this one has "
           f"{portable_cpu.own_capability() or 'no x86 vector extensions PyTorch uses'}")


def run_stages(work: Path, data_dir: Path, env: dict, host: dict) -> dict[str, bytes]:
    """The three stages, as DVC runs them, in `work`; every file they wrote, by path."""
    work.mkdir()
    write_params(work)
    scrubbed = {k: v for k, v in env.items()
                if k not in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR",
                             "MKL_DOMAIN_NUM_THREADS")}
    for stage in STAGES:
        run([sys.executable, str(ROOT / f"scripts/{stage}.py"), "--data", str(data_dir)], work,
            {**scrubbed, **host})
    return {str(p.relative_to(work)): p.read_bytes() for p in sorted(work.rglob("*"))
            if p.is_file() and p.name != "params.yaml"}


@needs_avx512
def test_an_avx2_host_and_an_avx512_host_write_the_same_bytes(tmp_path, data_dir, env):
    avx2 = run_stages(tmp_path / "avx2", data_dir, env, AVX2_HOST)
    avx512 = run_stages(tmp_path / "avx512", data_dir, env, AVX512_HOST)
    assert {"models/model.pt", "metrics/evaluate.json", "plots/train_loss.csv"} <= set(avx2)
    assert sorted(avx2) == sorted(avx512)
    assert [p for p in avx2 if avx2[p] != avx512[p]] == []
    record = json.loads(avx2["metrics/provenance/train.json"])
    # The pin reached both libraries: PyTorch dispatched to AVX2 kernels, MKL was asked for its
    # vendor-neutral branch (the next test sees MKL take it).
    assert {k: record[k] for k in ("portable_cpu", "aten_cpu_capability", "mkl_cbwr")} == {
        "portable_cpu": True, "aten_cpu_capability": "AVX2", "mkl_cbwr": "COMPATIBLE"}
    # The CPU's own widest kernels name the host, beside the record, not in it.
    assert "cpu_capability" not in record


needs_avx2 = pytest.mark.skipif(
    not portable_cpu.wanted(), reason="the pin applies only on x86-64 CPUs with AVX2")


@needs_avx2
def test_every_matrix_product_runs_mkls_vendor_neutral_branch(tmp_path, data_dir, env):
    # MKL's AVX2 branch exists on Intel CPUs only; elsewhere MKL takes its own branch, so an AMD
    # CPU computed other weights under an AVX2 pin. COMPATIBLE is the branch Intel documents as
    # the same on every x86 CPU (tests/test_training.py checks its thread-count independence).
    write_params(tmp_path, batch_size=512)  # a batch the stage trains on every core
    done = run([sys.executable, str(ROOT / "scripts/train.py"), "--data", str(data_dir)],
               tmp_path, {**env, "MKL_VERBOSE": "1", "OMP_NUM_THREADS": "2"})
    calls = [line for line in done.stdout.splitlines() if line.startswith("MKL_VERBOSE SGEMM")]
    assert len(calls) > 10
    assert {re.search(r"CNR:(\S+)", c)[1] for c in calls} == {"COMPATIBLE"}


@needs_avx512
def test_without_the_pin_the_simulated_hosts_differ(tmp_path, data_dir, env):
    # What the test above guards against: the hosts' own code paths give other weights.
    off = {**env, "FASHION_PORTABLE_CPU": "0"}
    avx2 = run_stages(tmp_path / "avx2", data_dir, off, AVX2_HOST)
    avx512 = run_stages(tmp_path / "avx512", data_dir, off, AVX512_HOST)
    assert avx2["models/model.pt"] != avx512["models/model.pt"]
    records = [json.loads(r["metrics/provenance/train.json"]) for r in (avx2, avx512)]
    assert [r["aten_cpu_capability"] for r in records] == ["AVX2", "AVX512"]
    assert [r["portable_cpu"] for r in records] == [False, False]


def test_a_bad_switch_value_is_refused_in_one_line(tmp_path, data_dir, env):
    write_params(tmp_path)
    done = run([sys.executable, str(ROOT / "scripts/train.py"), "--data", str(data_dir)],
               tmp_path, {**env, "FASHION_PORTABLE_CPU": "off"}, check=False)
    assert_failed(done, "FASHION_PORTABLE_CPU is 'off'; set it to 1 or 0, or unset it")
    assert not (tmp_path / "models").exists()


def test_the_pin_applies_only_where_the_cpu_has_avx2(monkeypatch):
    monkeypatch.delenv("FASHION_PORTABLE_CPU", raising=False)
    for own, applies in (("avx512", True), ("avx2", True), ("default", False), (None, False)):
        monkeypatch.setattr(portable_cpu, "own_capability", lambda own=own: own)
        assert portable_cpu.wanted() is applies
        assert portable_cpu.mkl_cbwr(threaded=True) == ("COMPATIBLE" if applies else "AUTO,STRICT")
