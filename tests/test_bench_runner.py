"""``python3 scripts/dev.py bench``: every benchmark at its smaller size (``--quick``), one by name
with the arguments given, and never the emulator the benchmarks start themselves."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def runs(monkeypatch):
    """The command lines ``cmd_bench`` runs, in order (nothing is installed or run)."""
    spec = importlib.util.spec_from_file_location("devscript", ROOT / "scripts" / "dev.py")
    dev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev)
    started: list[list[str]] = []
    monkeypatch.setattr(dev, "install", lambda: None)
    monkeypatch.setattr(dev, "passthrough", lambda argv, env: started.append(argv) or 0)
    return dev, started


def test_bench_runs_every_benchmark_with_quick_and_not_the_emulator(runs):
    dev, started = runs

    assert dev.cmd_bench([]) == 0

    names = [Path(argv[1]).stem for argv in started]
    assert "history" in names and "webhook" in names and "ui" in names
    assert "aws_emulator" not in names and "harness" not in names
    assert all(argv[2:] == ["--quick"] for argv in started)


def test_bench_by_name_runs_that_one_with_the_arguments_given(runs):
    dev, started = runs

    assert dev.cmd_bench(["history", "--deployments", "1000000"]) == 0

    assert [(Path(argv[1]).name, argv[2:]) for argv in started] == [
        ("history.py", ["--deployments", "1000000"])
    ]
