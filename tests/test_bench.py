"""benchmarks/bench.py runs and reports every figure (its numbers are not checked: no timing here)."""
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"
FIGURES = [
    "throughput vs typical (DictReader + float)",
    "throughput vs floor (csv.reader, nothing else)",
    "throughput vs no fast path (csv + check_row)",
    "client files reader vs the lesson's, plain file",
    "';' and decimal commas vs commas, client reader",
    "peak memory, 100,000 rows vs 20,000",
    "peak memory, 100,000 rows",
    "peak memory, 100,000 rows gzipped vs plain",
    "worst event-loop stall, 3 files at once",
    "files open at once, 3 large files",
    "batch time over its lower bound (default delay)",
    "per-file time, 100 files of 10 rows",
    "files open at once, 100 small files",
    "start-up: --help over python -c pass",
    "start-up: import asyncio alone over python -c pass",
]


def run_bench(*options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH), "--quick", *options],
                          capture_output=True, text=True, timeout=120)


def test_quick_run_prints_a_table_with_every_figure_its_target_and_verdict():
    done = run_bench()

    assert done.returncode in (0, 1), done.stderr  # 1 only says a target was missed
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
    assert done.returncode == (0 if all(figure["passed"] for figure in figures) else 1)
