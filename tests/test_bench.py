"""benchmarks/bench.py runs and reports every figure (its numbers are not checked: no timing here)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"
# benchmarks/ is not a package, so bench.py is loaded from its path.
spec = importlib.util.spec_from_file_location("bench", BENCH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
FIGURES = [
    "throughput vs typical (DictReader + float)",
    "throughput vs floor (csv.reader, nothing else)",
    "throughput vs no fast path (csv + check_row)",
    "client files reader vs the lesson's, plain file",
    "';' and decimal commas vs commas, client reader",
    "peak memory, 100,000 rows vs 20,000",
    "peak memory, 100,000 rows",
    "peak memory, 100,000 rows, no bytecode kept",
    "peak memory, 100,000 rows gzipped vs plain",
    "worst event-loop stall, 3 files at once",
    "files open at once, 3 large files",
    "batch time over its lower bound (default delay)",
    "per-file time, 100 files of 10 rows",
    "files open at once, 100 small files",
    "--workers 2 vs none, 6 x 20,000 rows",
    "--workers 2, 6 files, vs csv.reader on one core",
    "--workers 2 vs none, 3 x 20,000 rows",
    "--workers 2 vs none, 100 files of 10 rows",
    "worst event-loop stall, workers busy",
    "peak memory with workers, 100,000 rows vs 20,000",
    "peak memory with workers, each process",
    "Ctrl-C to exit, workers reading",
    "start-up: --help over python -c pass",
    "start-up: import asyncio alone over python -c pass",
    "worst event-loop stall, 50 HTTP clients during a watch",
    "requests answered, 50 clients at once",
]


def run_bench(*options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH), "--quick", *options],
                          capture_output=True, text=True, timeout=120)


def test_quick_run_prints_a_table_with_every_figure_its_target_and_verdict():
    done = run_bench()

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["figure", "measured", "target"]
    assert [row for row in rows if not any(row.startswith(name) for name in FIGURES)] == []
    assert len(rows) == len(FIGURES)
    assert all(row.rstrip().endswith(("pass", "FAIL")) for row in rows)


def test_quick_run_with_json_gives_the_same_figures():
    done = run_bench("--json")

    figures = json.loads(done.stdout)
    assert [figure["name"] for figure in figures] == FIGURES
    assert all(set(figure) == {"name", "measured", "target", "passed"} for figure in figures)
    assert done.returncode == 0


MISSED_A_TARGET = [
    bench.Figure("throughput vs typical (DictReader + float)", "1.50x", ">= 2.00x", False),
    bench.Figure("peak memory, 100,000 rows", "27.5 MiB", "<= 30 MiB", True),
]


def test_quick_run_exits_0_when_a_target_is_missed(monkeypatch, capsys):
    monkeypatch.setattr(bench, "run_all", lambda folder, sizes: MISSED_A_TARGET)

    code = bench.main(["--quick"])

    assert code == 0
    assert capsys.readouterr().out.splitlines()[1].endswith("FAIL")


def test_full_run_exits_1_when_a_target_is_missed(monkeypatch, capsys):
    monkeypatch.setattr(bench, "run_all", lambda folder, sizes: MISSED_A_TARGET)

    code = bench.main([])

    assert code == 1
    assert capsys.readouterr().out.splitlines()[1].endswith("FAIL")
