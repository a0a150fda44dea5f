"""--dashboard: the layout as plain lines, what it knows of each file, and whole runs under a
pseudo-terminal (exit status, the terminal given back, the report, Ctrl-C, q, a resize)."""
import asyncio
import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

import processor
from processor import Batch, BatchEvent, DashboardState, FileProgress, FileTally, FileView, Settings
from processor import dashboard_lines, first_file_shown, view_file

PROCESSOR = str(Path(__file__).resolve().parent.parent / "processor.py")
HEADER = "transaction_id,customer_id,amount,date,category\n"
ENTER_ALTERNATE_SCREEN = b"\x1b[?1049h"  # xterm's smcup and rmcup, as its terminfo entry says
LEAVE_ALTERNATE_SCREEN = b"\x1b[?1049l"


def rows_of(count: int) -> str:
    return "".join(f"T{n},C{n},1.00,2024-01-01,dining\n" for n in range(count))


# --- The layout ---

def small_batch(**changes) -> DashboardState:
    """A batch 2.0 s in: big.csv done, in/mid.csv half read in slot 1, small.csv waiting."""
    state = DashboardState(
        elapsed=2.0,
        files=[FileView("big.csv", "completed", 4000, 4000, 40, 2, 1.5),
               FileView("in/mid.csv", "running", 1000, 2000, 10, 0, 0.5),
               FileView("small.csv", "waiting", 0, 1000, 0, 0, None)],
        slots=["in/mid.csv", None],
        events=[BatchEvent(1.5, "finished big.csv (40 valid, 2 rejected)")])
    return state._replace(**changes)


def test_the_layout_shows_the_batch_its_slots_its_files_and_its_events():
    lines = dashboard_lines(small_batch(), 72, 13)

    # Bytes done: 4000 + 1000 + 0 of 7000, 71%; the bar's 65 inner columns get int(0.71 * 65),
    # 46. Rows: 40 + 2 + 10 in 2.0 s, 26 a second; time left: 2.0 s * 2000 / 5000, about 1 s.
    assert lines == [
        "Processing 3 files, up to 2 at a time (q or Ctrl-C to stop)",
        "[" + "#" * 46 + "." * 19 + "]  71%",
        "1 of 3 files done | 2.0 s | about 1 s left | 26 rows/s",
        "Slots",
        "  1  in/mid.csv",
        "  2  (free)",
        "Files 1-3 of 3       status     read             valid rejected     time",
        "  big.csv            completed  [##########]        40        2    1.5 s",
        "  in/mid.csv         running    [#####.....]        10        0    0.5 s",
        "  small.csv          waiting    [..........]         0        0        -",
        "Events",
        "     1.5 s  finished big.csv (40 valid, 2 rejected)",
    ]
    assert max(len(line) for line in lines) == 72


def test_a_name_too_long_for_its_column_keeps_its_end():
    files = [FileView("clients/acme_corporation_march.csv", "waiting", 0, 10, 0, 0, None)]

    lines = dashboard_lines(small_batch(files=files, slots=[None]), 72, 12)

    # 18 columns for the name: "..." and its last 15 characters.
    assert lines[6] == "  ...ation_march.csv waiting    [..........]         0        0        -"


def test_an_event_too_long_for_the_width_is_cut_with_dots():
    event = BatchEvent(0.25, "error far/away/" + "x" * 60 + ".csv: No such file or directory")

    lines = dashboard_lines(small_batch(events=[event]), 72, 13)

    assert lines[-1] == "     0.2 s  error far/away/" + "x" * 42 + "..."  # 72 columns


def test_events_get_at_most_half_the_rows_left_and_the_newest_stay():
    events = [BatchEvent(float(n), f"finished {n}.csv (1 valid, 0 rejected)") for n in range(5)]

    lines = dashboard_lines(small_batch(events=events), 72, 12)

    # 12 rows: 8 for the header, slots and titles; of the 4 left, 2 for the events.
    assert lines[6:] == [
        "Files 1-2 of 3       status     read             valid rejected     time",
        "  big.csv            completed  [##########]        40        2    1.5 s",
        "  in/mid.csv         running    [#####.....]        10        0    0.5 s",
        "Events",
        "     3.0 s  finished 3.csv (1 valid, 0 rejected)",
        "     4.0 s  finished 4.csv (1 valid, 0 rejected)",
    ]


def test_before_any_event_the_events_say_none_yet():
    lines = dashboard_lines(small_batch(events=[]), 72, 13)

    assert lines[-2:] == ["Events", "  (none yet)"]


def test_when_every_file_is_done_the_bar_is_full_and_nothing_is_left():
    files = [FileView("a.csv", "completed", 10, 10, 1, 0, 0.1),
             FileView("b.csv", "error", 0, 0, 0, 0, 0.0)]

    lines = dashboard_lines(small_batch(files=files, slots=[None, None]), 72, 13)

    assert lines[1] == "[" + "#" * 65 + "] 100%"
    assert lines[2] == "2 of 2 files done | 2.0 s | done | 0 rows/s"  # 1 row in 2 s rounds to 0


@pytest.mark.parametrize("width, height, shown", [
    (71, 13, "Terminal too small: 71x13, the dashboard needs 72x10"),
    (72, 9, "Terminal too small: 72x9, the dashboard needs 72x10"),
    (20, 5, "Terminal too smal..."),
], ids=["too-narrow", "too-short", "message-cut-to-the-width"])
def test_a_terminal_too_small_gets_one_line_that_says_so(width, height, shown):
    # 2 slots: 3 header lines, 1 + 2 for the slots, 2 more titles, and 2 rows: 10 in all.
    assert dashboard_lines(small_batch(), width, height) == [shown]


def statuses(text: str) -> list[FileView]:
    names = {"c": "completed", "e": "error", "r": "running", "t": "retry wait", "w": "waiting"}
    return [FileView(f"{n}.csv", names[letter], 0, 1, 0, 0, None) for n, letter in enumerate(text)]


@pytest.mark.parametrize("files, rows, first", [
    ("wwwwwww", 3, 0),  # nothing started: the top
    ("cccrrww", 3, 2),  # both running files, with the one done before them
    ("cccccrw", 3, 3),  # just enough to show the running one
    ("rcccccr", 3, 0),  # two running files 7 apart cannot both show: the first one does
    ("ccctcrw", 3, 3),  # a file waiting to retry is active too
    ("ccccccc", 3, 4),  # all done: the last ones
    ("crrw", 4, 0),  # everything fits
], ids=["not-started", "context-above", "scrolled", "first-active-wins", "retry-wait",
        "all-done", "all-fit"])
def test_the_list_of_files_scrolls_to_keep_the_active_ones_in_view(files, rows, first):
    assert first_file_shown(statuses(files), rows) == first


def test_the_files_title_says_which_files_are_shown():
    lines = dashboard_lines(small_batch(files=statuses("cccrrww")), 72, 11)

    # 11 rows: 8 fixed, 1 for the event, 2 for files: from the first running one, the fourth.
    assert lines[6].startswith("Files 4-5 of 7 ")
    assert [line.split()[0] for line in lines[7:9]] == ["3.csv", "4.csv"]


# --- What the dashboard knows of each file ---

def test_each_file_is_seen_as_done_running_waiting_to_retry_or_waiting():
    done = processor.file_result("done.csv", "completed") | {
        "total_transactions": 7, "invalid_rows": 1, "processing_time": 0.5}
    progress = FileProgress(started=110.0, bytes_read=50, tally=FileTally(count=3, invalid_rows=2))
    batch = Batch(filenames=["done.csv", "now.csv", "again.csv", "later.csv"],
                  settings=Settings(max_concurrent=2), semaphore=asyncio.Semaphore(2),
                  slots=["now.csv", None],
                  results={"done.csv": done}, progress={"now.csv": progress}, started=100.0,
                  retrying={"again.csv"})

    assert [view_file("done.csv", 90, batch, 112.5),
            view_file("now.csv", 200, batch, 112.5),
            view_file("again.csv", 300, batch, 112.5),
            view_file("later.csv", 400, batch, 112.5)] == [
        FileView("done.csv", "completed", 90, 90, 7, 1, 0.5),
        FileView("now.csv", "running", 50, 200, 3, 2, 2.5),  # 112.5 - 110.0
        FileView("again.csv", "retry wait", 0, 300, 0, 0, None),
        FileView("later.csv", "waiting", 0, 400, 0, 0, None),
    ]


def test_a_file_that_failed_shows_nothing_read():
    failed = processor.file_result("gone.csv", "error", error="No such file or directory",
                                    seconds=0.01)
    batch = Batch(filenames=["gone.csv"], settings=Settings(max_concurrent=1),
                  semaphore=asyncio.Semaphore(1), slots=[None],
                  results={"gone.csv": failed})

    assert view_file("gone.csv", 0, batch, 0.0) == FileView("gone.csv", "error", 0, 0, 0, 0, 0.01)


def test_a_result_becomes_an_event_that_says_how_it_ended():
    finished = processor.file_result("a.csv", "completed") | {
        "total_transactions": 1200, "invalid_rows": 3}
    failed = processor.file_result("b.csv", "error", error="Empty file: no header row")

    assert processor.describe_result(finished) == "finished a.csv (1,200 valid, 3 rejected)"
    assert processor.describe_result(failed) == "error b.csv: Empty file: no header row"


@pytest.mark.asyncio
async def test_a_view_is_shown_in_place_of_the_spinner_and_monitor(write_csv, monkeypatch):
    good = write_csv("good.csv", HEADER + rows_of(2))
    started: list[str] = []
    shown: list[Batch] = []

    async def never(*args, **options):
        started.append("spinner or monitor")

    async def view(batch):
        shown.append(batch)
        while len(batch.results) < len(batch.filenames):
            await asyncio.sleep(0)

    monkeypatch.setattr(processor, "show_spinner", never)
    monkeypatch.setattr(processor, "monitor_progress", never)
    await processor.process_batch([good], delay=0, view=view)

    assert started == []
    assert [batch.filenames for batch in shown] == [[good]]


@pytest.mark.asyncio
async def test_the_event_log_hears_each_result_and_each_retry_in_order(write_csv, tmp_path):
    good = write_csv("good.csv", HEADER + rows_of(2))
    missing = str(tmp_path / "missing.csv")
    events = processor.EventLog()

    await processor.process_batch([good, missing], delay=0, retries=1, retry_delay=0,
                                  on_result=events.add_result, on_retry=events.add_retry)

    texts = [text for at, text in events.recent]
    assert sorted(texts) == [
        f"error {missing}: No such file or directory",
        f"finished {good} (2 valid, 0 rejected)",
        f"retry {missing} in 0.0 s: No such file or directory",
    ]
    assert texts.index(f"retry {missing} in 0.0 s: No such file or directory") < texts.index(
        f"error {missing}: No such file or directory")


def test_with_the_dashboard_a_batch_hands_it_each_result_and_retry_as_an_event(
        write_csv, tmp_path, monkeypatch):
    good = write_csv("good.csv", HEADER + rows_of(2))
    missing = str(tmp_path / "missing.csv")
    shown: list[list[str]] = []

    async def stand_in_dashboard(screen, events, batch):
        while len(batch.results) < len(batch.filenames):
            await asyncio.sleep(0)
        shown.append([text for at, text in events.recent])

    monkeypatch.setattr(processor, "show_dashboard", stand_in_dashboard)
    monkeypatch.setattr(processor, "run_on_screen",
                        lambda work, dashboard, stop: asyncio.run(work("a screen")))

    processor.run_batch([good, missing], Settings(delay=0, retries=1, retry_delay=0), {},
                        db=None, read_file=None, dashboard=True, stop=processor.StopSignals())

    assert sorted(shown[0]) == [
        f"error {missing}: No such file or directory",
        f"finished {good} (2 valid, 0 rejected)",
        f"retry {missing} in 0.0 s: No such file or directory",
    ]


# --- Whole runs under a pseudo-terminal ---

class TerminalRun:
    """processor.py run on a pseudo-terminal of 24 x 80, as if in a terminal window; what it
    draws is collected as it comes, so that it never blocks on a full terminal."""

    def __init__(self, *args: str, stdout: int | None = None, term: str | None = "xterm"):
        self.master, slave = pty.openpty()
        self.resize(24, 80)
        self.settings_before = termios.tcgetattr(self.master)
        environment = {key: value for key, value in os.environ.items()
                       if key not in ("TERM", "LINES", "COLUMNS")}  # curses would believe them
        if term is not None:
            environment["TERM"] = term
        self.process = subprocess.Popen(
            [sys.executable, PROCESSOR, *args], stdin=slave,
            stdout=slave if stdout is None else stdout, stderr=slave, env=environment,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        os.close(slave)  # the child holds it now: reading ends when the child is gone
        self.output = bytearray()
        self.reader = threading.Thread(target=self.read_all, daemon=True)
        self.reader.start()

    def read_all(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the last holder of the other end has closed it
                return
            if not data:
                return
            self.output += data

    def resize(self, rows: int, columns: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def wait_for(self, text: bytes, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert time.monotonic() < deadline, f"never drew {text!r}: {bytes(self.output)!r}"
            time.sleep(0.01)

    def finish(self, timeout: float = 30.0) -> int:
        code = self.process.wait(timeout=timeout)
        self.reader.join(timeout=5)
        return code

    def settings_now(self) -> list:
        return termios.tcgetattr(self.master)  # on Linux, the terminal side's settings

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


@pytest.fixture
def terminal_run():
    """Return a function that starts a TerminalRun; each is stopped and closed at the end."""
    runs: list[TerminalRun] = []

    def start(*args: str, **options) -> TerminalRun:
        runs.append(TerminalRun(*args, **options))
        return runs[-1]

    yield start
    for run in runs:
        run.close()


@pytest.fixture
def slow_files(write_csv) -> list[str]:
    """Two files that take about 1.5 s each with --delay 0.05: 30 pauses of them."""
    return [write_csv(f"client{n}.csv", HEADER + rows_of(3000)) for n in (1, 2)]


def test_a_dashboard_run_leaves_the_alternate_screen_restores_the_terminal_and_reports(
        terminal_run, write_csv):
    path = write_csv("a.csv", HEADER + rows_of(3))

    run = terminal_run("--dashboard", "--delay", "0", path)
    code = run.finish()

    output = bytes(run.output)
    assert code == 0
    assert b"Slots" in output  # a frame was drawn
    assert output.index(ENTER_ALTERNATE_SCREEN) < output.index(LEAVE_ALTERNATE_SCREEN)
    report = output[output.index(LEAVE_ALTERNATE_SCREEN):]
    assert b"Batch: 1 file (1 completed, 0 failed) | 3 transactions | total 3.00" in report
    assert b"Processed" not in output  # no monitor line
    assert run.settings_now() == run.settings_before


def test_ctrl_c_under_the_dashboard_exits_130_and_restores_the_terminal(terminal_run,
                                                                         slow_files):
    run = terminal_run("--dashboard", "--delay", "0.05", *slow_files)
    run.wait_for(b"Slots")  # the first frame: the files have only begun

    run.process.send_signal(signal.SIGINT)
    code = run.finish()

    output = bytes(run.output)
    assert code == 130
    after = output[output.rindex(LEAVE_ALTERNATE_SCREEN):]
    assert b"cancelled" in after and b"Interrupted: not finished" in after
    assert b"Traceback" not in output
    assert run.settings_now() == run.settings_before


def test_q_stops_the_batch_as_ctrl_c_does(terminal_run, slow_files):
    run = terminal_run("--dashboard", "--delay", "0.05", *slow_files)
    run.wait_for(b"Slots")  # the first frame: the files have only begun

    os.write(run.master, b"q")
    code = run.finish()

    output = bytes(run.output)
    assert code == 130
    assert b"Interrupted: not finished" in output[output.rindex(LEAVE_ALTERNATE_SCREEN):]
    assert run.settings_now() == run.settings_before


def test_a_resized_terminal_is_drawn_again_at_its_new_size(terminal_run, slow_files):
    run = terminal_run("--dashboard", "--delay", "0.05", *slow_files)
    run.wait_for(b"Slots")  # the first frame: the files have only begun

    run.resize(6, 40)
    run.process.send_signal(signal.SIGWINCH)  # what the terminal's kernel side sends its job
    run.wait_for(b"Terminal too small: 40x6")
    run.resize(24, 80)
    run.process.send_signal(signal.SIGWINCH)
    code = run.finish()

    assert code == 0
    assert b"Terminal too small: 40x6" in bytes(run.output)


def test_with_stdout_piped_the_dashboard_falls_back_with_a_notice(terminal_run, write_csv):
    path = write_csv("a.csv", HEADER + rows_of(3))

    run = terminal_run("--dashboard", "--delay", "0", path, stdout=subprocess.PIPE)
    stdout = run.process.stdout.read()
    code = run.finish()

    assert code == 0
    assert stdout.startswith(b"File ")  # the report, on the pipe
    shown = bytes(run.output)
    assert (b"processor.py: no dashboard (stdout and stderr must both be a terminal); "
            b"showing the progress lines instead") in shown
    assert b"Processed 1 of 1 files (100%)" in shown
    assert ENTER_ALTERNATE_SCREEN not in shown


@pytest.mark.parametrize("term, why", [
    ("dumb", b"TERM is dumb"),
    (None, b"TERM is not set"),
    ("no-such-terminal", b"the terminal type 'no-such-terminal' is unknown here"),
], ids=["dumb", "missing", "unknown"])
def test_a_terminal_curses_cannot_drive_falls_back_with_a_notice(terminal_run, write_csv,
                                                                  term, why):
    path = write_csv("a.csv", HEADER + rows_of(3))

    run = terminal_run("--dashboard", "--delay", "0", path, term=term)
    code = run.finish()

    shown = bytes(run.output)
    assert code == 0
    assert b"processor.py: no dashboard (" + why + b"); showing the progress lines" in shown
    assert ENTER_ALTERNATE_SCREEN not in shown
    assert b"Batch: 1 file (1 completed, 0 failed)" in shown
