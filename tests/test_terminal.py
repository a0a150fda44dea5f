"""The spinner and the monitor: what they draw on stderr, and how they stop."""
import asyncio

import pytest

import processor
from processor import estimate_seconds_left, format_progress, monitor_progress, show_spinner


async def step(times: int) -> None:
    for _ in range(times):
        await asyncio.sleep(0)


# --- The spinner ---

@pytest.mark.asyncio
async def test_spinner_cycles_its_frames_on_one_line(fake_terminal, monkeypatch):
    terminal = fake_terminal()
    monkeypatch.setattr(processor, "SPINNER_INTERVAL_S", 0)
    spinner = asyncio.create_task(show_spinner("Working"))

    await step(6)
    spinner.cancel()
    await asyncio.gather(spinner, return_exceptions=True)

    frames = terminal.getvalue().split("\r")[1:6]
    assert frames == ["\\ Working", "| Working", "/ Working", "- Working", "\\ Working"]
    assert "\n" not in terminal.getvalue()


@pytest.mark.asyncio
async def test_cancelled_spinner_erases_its_line_and_stays_cancelled(fake_terminal):
    terminal = fake_terminal()
    spinner = asyncio.create_task(show_spinner("Working"))
    await step(1)

    spinner.cancel()
    await asyncio.gather(spinner, return_exceptions=True)

    assert spinner.cancelled()
    assert terminal.getvalue() == "\r\\ Working" + "\r" + " " * len("\\ Working") + "\r"
    assert terminal.visible_line().strip() == ""


@pytest.mark.asyncio
async def test_spinner_draws_nothing_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(processor, "SPINNER_INTERVAL_S", 0)
    spinner = asyncio.create_task(show_spinner("Working"))

    await step(5)
    spinner.cancel()
    await asyncio.gather(spinner, return_exceptions=True)

    assert spinner.cancelled()
    assert capsys.readouterr().err == ""


# --- The monitor ---

@pytest.mark.asyncio
async def test_monitor_prints_its_line_and_returns_when_every_file_has_a_result(capsys):
    results = {name: processor.file_result(name, "completed") for name in ["a.csv", "b.csv"]}

    await asyncio.wait_for(monitor_progress(["a.csv", "b.csv"], results), timeout=5)

    assert capsys.readouterr().err == "Processed 2 of 2 files (100%) | finished: a.csv, b.csv\n"


@pytest.mark.asyncio
async def test_monitor_names_only_the_files_finished_since_its_last_line(capsys, monkeypatch):
    monkeypatch.setattr(processor, "MONITOR_INTERVAL_S", 0)
    monkeypatch.setattr(processor, "MONITOR_POLL_S", 0)
    results = {"a.csv": processor.file_result("a.csv", "completed")}
    monitor = asyncio.create_task(monitor_progress(["a.csv", "b.csv"], results))
    await step(3)

    results["b.csv"] = processor.file_result("b.csv", "error", error="No such file or directory")
    await asyncio.wait_for(monitor, timeout=5)

    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "Processed 1 of 2 files (50%) | finished: a.csv | estimating time left"
    assert lines[-1] == "Processed 2 of 2 files (100%) | finished: b.csv"
    assert all("finished" not in line for line in lines[1:-1])


@pytest.mark.asyncio
async def test_monitor_ends_as_soon_as_it_is_told_the_last_file_finished(capsys, monkeypatch):
    # Were it to wait for its next look, it would take a minute.
    monkeypatch.setattr(processor, "MONITOR_POLL_S", 60)
    results = {"a.csv": processor.file_result("a.csv", "completed")}
    file_finished = asyncio.Event()
    monitor = asyncio.create_task(monitor_progress(["a.csv", "b.csv"], results,
                                                   file_finished=file_finished))
    await step(3)

    results["b.csv"] = processor.file_result("b.csv", "completed")
    file_finished.set()
    await asyncio.wait_for(monitor, timeout=1)

    assert capsys.readouterr().err.splitlines()[-1] == (
        "Processed 2 of 2 files (100%) | finished: a.csv, b.csv")


@pytest.mark.asyncio
async def test_monitor_names_the_files_waiting_to_retry_in_input_order(capsys, monkeypatch):
    monkeypatch.setattr(processor, "MONITOR_INTERVAL_S", 0)
    monkeypatch.setattr(processor, "MONITOR_POLL_S", 0)
    monkeypatch.setenv("COLUMNS", "200")
    results = {"a.csv": processor.file_result("a.csv", "completed")}
    retrying = {"d.csv", "b.csv"}
    monitor = asyncio.create_task(monitor_progress(["a.csv", "b.csv", "c.csv", "d.csv"], results,
                                                   retrying=retrying))
    await step(3)

    retrying.clear()
    results.update({f"{name}.csv": processor.file_result(f"{name}.csv", "completed")
                    for name in "bcd"})
    await asyncio.wait_for(monitor, timeout=5)

    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == ("Processed 1 of 4 files (25%) | finished: a.csv | "
                        "waiting to retry: b.csv, d.csv | estimating time left")
    assert "waiting" not in lines[-1]


@pytest.mark.asyncio
async def test_monitor_clears_the_spinner_line_before_writing(fake_terminal):
    terminal = fake_terminal()
    processor.status_line.draw("| Working")

    await asyncio.wait_for(monitor_progress(["a.csv"], {"a.csv": processor.file_result("a.csv", "completed")}), 5)

    assert terminal.getvalue() == ("\r| Working" + "\r" + " " * 9 + "\r"
                                   + "Processed 1 of 1 files (100%) | finished: a.csv\n")


@pytest.mark.parametrize("done, total, finished, left, line", [
    (3, 7, ["a.csv", "b.csv"], 4.2, "Processed 3 of 7 files (43%) | finished: a.csv, b.csv | about 4 s left"),
    (0, 2, [], None, "Processed 0 of 2 files (0%) | estimating time left"),
    (199, 200, [], 0.2, "Processed 199 of 200 files (99%) | about 1 s left"),
    (2, 2, ["x.csv"], None, "Processed 2 of 2 files (100%) | finished: x.csv"),
], ids=["midway", "nothing-yet", "never-100-before-the-end", "done"])
def test_progress_line(done, total, finished, left, line):
    assert format_progress(done, total, finished, left) == line


def test_progress_line_of_many_files_has_thousands_separators_and_fits_the_width():
    finished = [f"f{n:04d}.csv" for n in range(1500)]

    line = format_progress(1500, 1500, finished, None, width=80)

    # The counts and the label take 51 columns; each name and its comma 11 more.
    assert line == ("Processed 1,500 of 1,500 files (100%) | finished: f0000.csv "
                    "and 1,499 more")
    assert len(line) <= 80
    assert format_progress(1500, 1500, finished, None, width=100) == (
        "Processed 1,500 of 1,500 files (100%) | finished: f0000.csv, f0001.csv, f0002.csv "
        "and 1,497 more")


def test_progress_line_with_no_room_for_a_name_counts_the_files():
    finished = [f"data/transactions_{n:04d}.csv" for n in range(1500)]

    assert format_progress(1500, 1500, finished, None, width=80) == \
        "Processed 1,500 of 1,500 files (100%) | finished: 1,500 files"


def test_progress_line_shares_the_width_between_its_lists_and_keeps_the_time_left():
    line = format_progress(1, 9, ["a.csv", "b.csv", "c.csv", "d.csv"], 200.0,
                           ["e.csv", "f.csv", "g.csv", "h.csv"], width=120)

    assert line == ("Processed 1 of 9 files (11%) | finished: a.csv, b.csv and 2 more | "
                    "waiting to retry: 4 files | about 3 min left")
    assert len(line) <= 120


def test_a_name_wider_than_the_room_is_still_shown():
    name = "x" * 100 + ".csv"

    assert format_progress(1, 2, [name], None, width=80) == \
        f"Processed 1 of 2 files (50%) | finished: {name} | estimating time left"


@pytest.mark.parametrize("seconds, said", [
    (0.2, "1 s"), (4.4, "4 s"), (89, "89 s"), (90, "2 min"), (1002, "17 min"), (5369, "89 min"),
    (5400, "1 h 30 min"), (7500, "2 h 5 min"), (100_000, "27 h 47 min"),
], ids=lambda value: str(value))
def test_time_left_is_said_in_seconds_minutes_or_hours(seconds, said):
    assert processor.format_time_left(seconds) == f"about {said} left"


def test_the_status_line_is_cut_to_the_terminal_so_that_it_never_wraps(fake_terminal, monkeypatch):
    terminal = fake_terminal()
    monkeypatch.setenv("COLUMNS", "40")

    processor.status_line.draw("| watching /srv/inbox: 12 done, 1 failed, 2 processing, 3 waiting")

    assert terminal.getvalue() == "\r| watching /srv/inbox: 12 done, 1 fa..."
    assert len(terminal.getvalue()) - 1 == 39


def test_progress_line_names_the_files_waiting_to_retry():
    assert (format_progress(1, 3, [], 2.0, ["late.csv", "gone.csv"])
            == "Processed 1 of 3 files (33%) | waiting to retry: late.csv, gone.csv | about 2 s left")


def test_time_left_assumes_the_rest_goes_as_fast_as_what_is_done():
    assert estimate_seconds_left(10.0, 25, 100) == 30.0  # 25 bytes took 10 s, 75 remain


def test_time_left_is_unknown_before_any_progress():
    assert estimate_seconds_left(10.0, 0, 100) is None


@pytest.mark.asyncio
async def test_off_a_terminal_the_monitor_names_many_files_but_not_1500(capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    names = [f"clients/northern-region/file_{n:04d}.csv" for n in range(1500)]
    results = {name: processor.file_result(name, "completed") for name in names}

    await asyncio.wait_for(monitor_progress(names, results), timeout=5)

    [line] = capsys.readouterr().err.splitlines()
    assert len(line) <= 1000
    assert line.startswith("Processed 1,500 of 1,500 files (100%) | finished: "
                           "clients/northern-region/file_0000.csv, ")
    assert line.endswith(" more")
    shown = line.count(", ") + 1
    assert line.endswith(f" and {1500 - shown:,} more")
