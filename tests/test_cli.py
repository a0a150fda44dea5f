"""The command line, run as a user runs it: exit codes, streams, JSON, directories, Ctrl-C."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import processor
from processor import main

PROCESSOR = str(Path(__file__).resolve().parent.parent / "processor.py")
HEADER = "transaction_id,customer_id,amount,date,category\n"
GOOD = HEADER + "T1,C1,12.50,2024-01-05,dining\nT2,C2,7.25,2024-02-01,fuel\n"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, PROCESSOR, *args], capture_output=True, text=True,
                          timeout=60)


def test_all_files_completed_exits_0_with_the_report_on_stdout_and_progress_on_stderr(write_csv):
    path = write_csv("good.csv", GOOD)

    done = run("--delay", "0", path)

    assert done.returncode == 0
    assert path in done.stdout and "completed" in done.stdout
    assert "total 19.75" in done.stdout  # 12.50 + 7.25
    assert "Processed" not in done.stdout
    assert "Processed 1 of 1 files (100%)" in done.stderr
    assert "\r" not in done.stderr


def test_a_file_that_cannot_be_processed_exits_1_and_is_still_reported(write_csv, tmp_path):
    path = write_csv("good.csv", GOOD)
    missing = str(tmp_path / "missing.csv")

    done = run("--delay", "0", path, missing)

    assert done.returncode == 1
    assert f"{missing}: No such file or directory" in done.stdout
    assert "total 19.75" in done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args", [
    [], ["--max-concurrent", "0", "x.csv"], ["--max-concurrent", "two", "x.csv"],
    ["--delay", "-1", "x.csv"], ["--delay", "nan", "x.csv"], ["--delay", "inf", "x.csv"],
    ["--colour", "x.csv"], ["--db", "", "x.csv"], ["--retries", "-1", "x.csv"],
    ["--retries", "1.5", "x.csv"], ["--retry-delay", "nan", "x.csv"],
], ids=["no-files", "zero-slots", "word-slots", "negative-delay", "nan-delay", "inf-delay",
        "unknown-option", "empty-db-path", "negative-retries", "fraction-retries",
        "nan-retry-delay"])
def test_usage_errors_exit_2_with_a_one_line_message(args):
    done = run(*args)

    assert done.returncode == 2
    assert done.stdout == ""
    assert len([line for line in done.stderr.splitlines() if "error:" in line]) == 1
    assert "Traceback" not in done.stderr


def test_a_directory_with_no_csv_files_is_a_usage_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not a csv")

    done = run(str(tmp_path))

    assert done.returncode == 2
    assert f"no *.csv or *.csv.gz files in {tmp_path}" in done.stderr


def test_json_output_is_only_json_with_every_figure(write_csv, tmp_path):
    path = write_csv("good.csv", GOOD)
    missing = str(tmp_path / "missing.csv")

    done = run("--json", "--delay", "0", path, missing)

    batch = json.loads(done.stdout)
    assert done.returncode == 1
    assert list(batch["results"]) == [path, missing]
    assert batch["results"][path]["total_amount"] == 19.75
    assert batch["results"][path]["average_transaction"] == 9.875  # 19.75 / 2, unrounded
    assert batch["results"][missing]["status"] == "error"
    assert (batch["summary"]["total_files"], batch["summary"]["failed_files"]) == (2, 1)


def test_a_directory_means_its_csv_files_sorted_by_name(tmp_path):
    folder = tmp_path / "batch"
    (folder / "nested").mkdir(parents=True)
    for name in ["b.csv", "a.csv", "nested/c.csv"]:
        (folder / name).write_text(GOOD)
    (folder / "readme.txt").write_text("skip me")

    done = run("--json", "--delay", "0", str(folder))

    assert list(json.loads(done.stdout)["results"]) == [str(folder / "a.csv"), str(folder / "b.csv")]


def test_ctrl_c_exits_130_with_a_partial_report_and_no_traceback(write_csv):
    quick = write_csv("quick.csv", GOOD)
    slow = write_csv("slow.csv", HEADER + "".join(f"T{n},C1,1.00,2024-01-01,a\n" for n in range(1000)))
    # SIGINT is ignored in processes started in the background; the program must see it here.
    child = subprocess.Popen(
        [sys.executable, PROCESSOR, "--delay", "1", quick, slow], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    progress = []
    for line in child.stderr:  # the monitor's first line, at 2 s, names the quick file finished
        progress.append(line)
        if "finished:" in line:
            break

    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=30)

    assert child.returncode == 130
    assert f"finished: {quick}" in progress[-1]
    quick_row = next(line for line in stdout.splitlines() if line.startswith(quick))
    slow_row = next(line for line in stdout.splitlines() if line.startswith(slow))
    assert quick_row.split()[1:3] == ["completed", "2"]
    assert slow_row.split()[1] == "cancelled"
    assert f"Interrupted: not finished: {slow}" in stderr
    assert "Traceback" not in stderr + stdout
    assert "\r" not in stderr


def test_ctrl_c_during_a_wait_to_retry_exits_130_with_the_file_cancelled(tmp_path):
    late = str(tmp_path / "late.csv")  # never arrives
    child = subprocess.Popen(
        [sys.executable, PROCESSOR, "--retries", "3", "--retry-delay", "30", late],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in child.stderr:  # the monitor's first line, at 2 s, comes during the first wait
        if "Processed" in line:
            break

    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=10)  # not the 27 s or more left of the wait

    assert child.returncode == 130
    assert line == f"Processed 0 of 1 files (0%) | waiting to retry: {late} | estimating time left\n"
    late_row = next(row for row in stdout.splitlines() if row.startswith(late))
    assert late_row.split()[1] == "cancelled"
    assert f"Interrupted: not finished: {late}" in stderr
    assert "Traceback" not in stderr + stdout


def test_json_gives_each_result_its_attempts_and_their_errors(tmp_path, capsys):
    missing = str(tmp_path / "missing.csv")

    code = main(["--json", "--delay", "0", "--retries", "2", "--retry-delay", "0", missing])

    result = json.loads(capsys.readouterr().out)["results"][missing]
    assert code == 1
    assert (result["status"], result["attempts"], result["retryable"]) == ("error", 3, True)
    assert result["earlier_errors"] == ["No such file or directory"] * 2
    assert result["error"] == "No such file or directory"


def test_main_returns_the_exit_status(write_csv, capsys):
    path = write_csv("good.csv", GOOD)

    assert main(["--delay", "0", path]) == 0
    assert "total 19.75" in capsys.readouterr().out


def test_help_explains_the_exit_statuses(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])

    assert exited.value.code == 0
    help_text = capsys.readouterr().out
    assert "--max-concurrent N" in help_text
    assert "130" in help_text and "exit status" in help_text


def test_a_file_named_twice_or_through_its_directory_is_processed_once(write_csv, tmp_path, capsys):
    path = write_csv("good.csv", GOOD)

    code = main(["--json", "--delay", "0", path, str(tmp_path), path])

    captured = capsys.readouterr()
    assert code == 0
    assert list(json.loads(captured.out)["results"]) == [path]
    assert "Processing 1 file," in captured.err


def test_the_report_fits_the_width_in_columns_and_is_whole_off_a_terminal():
    sample_data = str(Path(PROCESSOR).parent / "sample_data")

    narrow = subprocess.run([sys.executable, PROCESSOR, "--delay", "0", sample_data],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "COLUMNS": "80"})
    whole = subprocess.run([sys.executable, PROCESSOR, "--delay", "0", sample_data],
                           capture_output=True, text=True, timeout=60,
                           env={key: value for key, value in os.environ.items()
                                if key != "COLUMNS"})

    assert max(len(line) for line in narrow.stdout.splitlines()) <= 80
    assert "(left out to fit 80 columns: Dates, Seconds, Top category)" in narrow.stdout
    assert whole.stdout.splitlines()[0].split()[-2:] == ["Dates", "Seconds"]
    assert max(len(line) for line in whole.stdout.splitlines()) > 80


def rows_file(folder: Path, name: str, rows: int) -> str:
    path = folder / name
    path.write_text(HEADER + "".join(f"T{n:05d},C1,1.00,2024-01-01,a\n" for n in range(rows)))
    return str(path)


def test_a_pause_that_will_take_over_a_minute_is_explained(tmp_path):
    big = rows_file(tmp_path, "big.csv", 7000)  # 70 pauses of 1 s, one after another
    small = rows_file(tmp_path, "small.csv", 10)

    hint = processor.delay_hint([small, big], processor.Settings(delay=1.0))

    # Every row is 28 bytes, the header 48: the size says about 7,001 rows, 70 pauses.
    assert hint == ("processor.py: the simulated I/O pause alone (--delay 1 s after every 100 "
                    "rows) will take about 70 s; --delay 0 turns it off")


@pytest.mark.parametrize("delay", [0.0, 0.1], ids=["no-pause", "seven-seconds"])
def test_a_pause_that_will_not_dominate_is_not_mentioned(tmp_path, delay):
    big = rows_file(tmp_path, "big.csv", 7000)

    assert processor.delay_hint([big], processor.Settings(delay=delay)) is None


def test_many_files_pause_max_concurrent_at_a_time(tmp_path):
    files = [rows_file(tmp_path, f"f{n}.csv", 2800) for n in range(6)]  # 168 pauses in all

    one_at_a_time = processor.delay_hint(files, processor.Settings(delay=1.0, max_concurrent=1))
    three_at_a_time = processor.delay_hint(files, processor.Settings(delay=1.0))

    assert "will take about 3 min;" in one_at_a_time  # 168 s
    assert three_at_a_time is None  # 56 s


def test_the_pause_hint_comes_on_stderr_before_the_batch(tmp_path, monkeypatch, capsys):
    big = rows_file(tmp_path, "big.csv", 7000)
    monkeypatch.setattr(processor, "run_batch", lambda filenames, settings, results, **options:
                        processor.summarize_batch(filenames, {}, 0.0))

    main(["--delay", "1", big])

    assert capsys.readouterr().err.splitlines()[1].startswith(
        "processor.py: the simulated I/O pause alone (--delay 1 s after every 100 rows)")
