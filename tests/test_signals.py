"""Signals at every moment of a run, a closed pipe, an output that cannot carry every character:
the program ends with a status that says what happened, never with a traceback."""
import asyncio
import fcntl
import json
import os
import pty
import select
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from contextlib import suppress
from pathlib import Path

import pytest

import processor

TESTS = Path(__file__).resolve().parent
PROCESSOR = str(TESTS.parent / "processor.py")
PAUSE_AT = str(TESTS / "pause_at.py")
HEADER = "transaction_id,customer_id,amount,date,category\n"
STOP_SIGNALS = {"SIGINT": (signal.SIGINT, 130), "SIGTERM": (signal.SIGTERM, 143),
                "SIGHUP": (signal.SIGHUP, 129)}


def start(command: list[str], **options) -> subprocess.Popen:
    # A process started in the background ignores SIGINT; the program must see it here.
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            **options)


def wait_for_line(child: subprocess.Popen, text: str) -> list[str]:
    """Read the child's stderr up to the first line containing text; return the lines read."""
    lines = []
    for line in child.stderr:
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"{text!r} never came; stderr was {''.join(lines)!r}")


def assert_quiet(*outputs: str) -> None:
    for output in outputs:
        assert "Traceback" not in output
        assert "Exception ignored" not in output
        assert "never awaited" not in output
        assert "ResourceWarning" not in output


def batch_states(database: Path) -> list[str]:
    with sqlite3.connect(database) as connection:
        tables = connection.execute("SELECT name FROM sqlite_master WHERE name = 'batches'")
        if not tables.fetchall():
            return []
        return [state for state, in connection.execute("SELECT state FROM batches")]


@pytest.fixture
def small_file(tmp_path) -> str:
    path = tmp_path / "a.csv"
    path.write_text(HEADER + "T1,C1,1.00,2024-01-01,a\n")
    return str(path)


@pytest.mark.parametrize("name", STOP_SIGNALS)
@pytest.mark.parametrize("moment", ["imports", "arguments"])
def test_a_signal_before_the_batch_ends_the_program_quietly_with_its_status(small_file, moment,
                                                                          name):
    number, status = STOP_SIGNALS[name]
    child = start([sys.executable, PAUSE_AT, moment, small_file])
    wait_for_line(child, f"paused at {moment}")

    child.send_signal(number)
    stdout, stderr = child.communicate(timeout=10)

    assert child.returncode == status
    assert stdout == ""
    assert_quiet(stderr)


@pytest.mark.parametrize("name", STOP_SIGNALS)
def test_a_signal_while_the_database_opens_ends_the_program_and_claims_no_save(
        small_file, tmp_path, name):
    number, status = STOP_SIGNALS[name]
    database = tmp_path / "r.db"
    child = start([sys.executable, PAUSE_AT, "database", "--db", str(database), small_file])
    wait_for_line(child, "paused at database")

    child.send_signal(number)
    stdout, stderr = child.communicate(timeout=40)

    assert child.returncode == status
    assert_quiet(stdout, stderr)
    assert "Saved to" not in stderr
    assert f"nothing saved to {database}" in stderr
    assert batch_states(database) == []
    assert stdout == ""  # no file had begun: nothing to report


@pytest.mark.parametrize("name", STOP_SIGNALS)
def test_a_signal_while_the_event_loop_is_made_reports_every_file_cancelled(small_file, name):
    number, status = STOP_SIGNALS[name]
    # An event loop left unclosed is only mentioned when resource warnings are shown.
    child = start([sys.executable, "-W", "always::ResourceWarning", PAUSE_AT, "loop", small_file])
    wait_for_line(child, "paused at loop")

    child.send_signal(number)
    stdout, stderr = child.communicate(timeout=10)

    assert child.returncode == status
    assert_quiet(stdout, stderr)
    assert stdout.splitlines()[2].split()[:2] == [small_file, "cancelled"]
    assert f"Interrupted: not finished: {small_file}" in stderr


@pytest.mark.parametrize("name", STOP_SIGNALS)
def test_a_signal_mid_batch_gives_the_partial_report_and_its_status(tmp_path, name):
    number, status = STOP_SIGNALS[name]
    quick = tmp_path / "quick.csv"
    quick.write_text(HEADER + "T1,C1,1.00,2024-01-01,a\n")
    slow = tmp_path / "slow.csv"
    slow.write_text(HEADER + "".join(f"T{n},C1,1.00,2024-01-01,a\n" for n in range(1000)))
    database = tmp_path / "r.db"
    child = start([sys.executable, PROCESSOR, "--delay", "1", "--db", str(database),
                   str(quick), str(slow)])
    wait_for_line(child, "finished:")

    child.send_signal(number)
    stdout, stderr = child.communicate(timeout=30)

    assert child.returncode == status
    assert_quiet(stdout, stderr)
    rows = {line.split()[0]: line.split()[1] for line in stdout.splitlines()
            if line.startswith(str(tmp_path))}
    assert rows == {str(quick): "completed", str(slow): "cancelled"}
    assert f"Interrupted: not finished: {slow}" in stderr
    assert f"Saved to {database} as batch 1" in stderr
    assert batch_states(database) == ["interrupted"]


@pytest.mark.parametrize("name", STOP_SIGNALS)
def test_a_signal_while_the_report_is_written_stops_it_with_the_signals_status(tmp_path, name):
    number, status = STOP_SIGNALS[name]
    for n in range(300):  # their JSON is far more than a pipe holds unread
        (tmp_path / f"file_{n:03d}.csv").write_text(HEADER + "T1,C1,1.00,2024-01-01,a\n")
    child = start([sys.executable, PROCESSOR, "--json", "--delay", "0", str(tmp_path)])
    # The report has begun: what is left of it is far more than the pipe holds unread, so
    # the program is now writing it, or waiting to.
    assert os.read(child.stdout.fileno(), 1) == b"{"

    child.send_signal(number)
    stdout, stderr = child.communicate(timeout=10)

    assert child.returncode == status
    assert_quiet(stderr)
    with pytest.raises(json.JSONDecodeError):
        json.loads("{" + stdout)  # cut short, and the status says so


# For each first signal, a second whose handler is still main's at the pause (SIGINT's is put
# back first), and whose status is not the first's.
SECOND_SIGNALS = {"SIGINT": signal.SIGTERM, "SIGTERM": signal.SIGHUP, "SIGHUP": signal.SIGTERM}


@pytest.mark.parametrize("name", STOP_SIGNALS)
def test_a_second_signal_as_the_handlers_are_put_back_keeps_the_first_status_quietly(tmp_path,
                                                                                    name):
    number, status = STOP_SIGNALS[name]
    for n in range(300):  # their JSON is far more than a pipe holds unread
        (tmp_path / f"file_{n:03d}.csv").write_text(HEADER + "T1,C1,1.00,2024-01-01,a\n")
    child = start([sys.executable, PAUSE_AT, "handlers", "--json", "--delay", "0",
                   str(tmp_path)])
    # The report has begun, and stdout is read no further until both signals have come: the
    # program is writing the rest to a full pipe, or waiting to.
    assert os.read(child.stdout.fileno(), 1) == b"{"
    child.send_signal(number)  # stops the report: main's with block ends, its handlers go back
    # The race itself, held open: pause_at stops StopSignals.__exit__ after SIGINT's handler is
    # put back, while the other two are still main's.
    wait_for_line(child, "paused at handlers")

    child.send_signal(SECOND_SIGNALS[name])
    stdout, stderr = child.communicate(timeout=10)

    assert child.returncode == status
    assert_quiet(stderr)
    with pytest.raises(json.JSONDecodeError):
        json.loads("{" + stdout)  # cut short, and the status says so


def read_terminal_until(controller: int, child: subprocess.Popen, text: bytes) -> bytes:
    """Read what the child writes to its terminal until text appears, or it exits."""
    seen = b""
    while text not in seen and child.poll() is None:
        if select.select([controller], [], [], 0.1)[0]:
            seen += os.read(controller, 65536)
    return seen


@pytest.mark.parametrize("name", STOP_SIGNALS)
def test_a_signal_during_curses_start_up_leaves_the_terminal_as_it_was(small_file, name):
    number, status = STOP_SIGNALS[name]
    controller, terminal = pty.openpty()
    before = termios.tcgetattr(terminal)
    child = subprocess.Popen(
        [sys.executable, PAUSE_AT, "curses", "--dashboard", small_file],
        stdin=terminal, stdout=terminal, stderr=terminal, env={**os.environ, "TERM": "xterm"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert b"paused at curses" in read_terminal_until(controller, child, b"paused at curses")
        child.send_signal(number)
        output = read_terminal_until(controller, child, b"never")
        child.wait(timeout=10)
        output += os.read(controller, 65536) if select.select([controller], [], [], 0.5)[0] else b""
        after = termios.tcgetattr(terminal)
    finally:
        os.close(terminal)
        os.close(controller)

    assert child.returncode == status
    assert_quiet(output.decode(errors="replace"))
    assert after[3] & termios.ECHO  # local modes: keys are echoed again
    assert after[3] & termios.ICANON
    assert after == before
    assert b"cancelled" in output  # the partial report


@pytest.mark.parametrize("options", [[], ["--json"], ["--timeline"]],
                         ids=["report", "json", "timeline"])
def test_a_closed_pipe_ends_the_program_quietly_with_status_141(tmp_path, options):
    for n in range(3):
        (tmp_path / f"file_{n}.csv").write_text(HEADER + "T1,C1,1.00,2024-01-01,a\n")
    child = start([sys.executable, PROCESSOR, "--delay", "0", *options, str(tmp_path)])
    child.stdout.close()  # as `| head` does once it has read its lines

    stderr = child.stderr.read()
    child.wait(timeout=30)

    assert child.returncode == 141  # 128 + SIGPIPE, as a program that SIGPIPE stopped
    assert_quiet(stderr)
    assert "Processed 3 of 3 files" in stderr


def test_characters_the_output_cannot_carry_are_escaped(tmp_path):
    euro = tmp_path / "euro.csv"
    euro.write_text(HEADER + "T1,C1,€12.00,2024-01-01,a\nT2,C1,1.00,2024-01-01,a\n",
                    encoding="utf-8")

    done = subprocess.run([sys.executable, PROCESSOR, "--delay", "0", str(euro)],
                          capture_output=True, env={**os.environ, "PYTHONIOENCODING": "ascii"},
                          timeout=30)

    assert done.returncode == 0
    assert b"  line 2: amount '\\u20ac12.00' is not a plain decimal number" in done.stdout
    assert_quiet(done.stderr.decode())


def test_a_terminal_that_hangs_up_mid_batch_gives_129_and_the_batch_reads_interrupted(tmp_path):
    slow = tmp_path / "slow.csv"
    slow.write_text(HEADER + "".join(f"T{n},C1,1.00,2024-01-01,a\n" for n in range(1000)))
    database = tmp_path / "r.db"
    child, controller = pty.fork()  # the child's controlling terminal is the new one
    if child == 0:
        os.execv(sys.executable, [sys.executable, PROCESSOR, "--delay", "0.5", "--db",
                                  str(database), str(slow)])
    seen = b""
    while b"Processing 1 file" not in seen:
        seen += os.read(controller, 4096)
    time.sleep(0.3)

    os.close(controller)  # the terminal goes: the kernel sends SIGHUP, and writing fails
    _, status = os.waitpid(child, 0)

    assert os.waitstatus_to_exitcode(status) == 129
    assert batch_states(database) == ["interrupted"]


def test_a_terminal_that_hangs_up_under_the_dashboard_gives_129_and_no_traceback(tmp_path):
    slow = tmp_path / "slow.csv"
    slow.write_text(HEADER + "".join(f"T{n},C1,1.00,2024-01-01,a\n" for n in range(5000)))
    # stderr on a terminal of its own, which stays: what the program says after the hang-up
    # (a traceback) can still be read. The dashboard needs stdout and stderr both terminals.
    errors, errors_terminal = pty.openpty()
    child, controller = pty.fork()  # the child's controlling terminal is the new one
    if child == 0:
        os.dup2(errors_terminal, 2)
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        environment = {key: value for key, value in os.environ.items()
                       if key not in ("LINES", "COLUMNS")}  # curses would believe them
        os.execve(sys.executable, [sys.executable, PROCESSOR, "--dashboard", "--delay", "0.05",
                                   str(slow)], {**environment, "TERM": "xterm"})
    os.close(errors_terminal)
    try:
        seen = b""
        while b"Slots" not in seen:  # the first frame: curses is set up, the batch runs
            seen += os.read(controller, 4096)

        os.close(controller)  # the terminal goes: SIGHUP, and each of curses' teardown steps fails
        said = b""
        with suppress(OSError):  # EIO: all of it read, and the child, its end's last holder, gone
            while data := os.read(errors, 65536):
                said += data
        _, status = os.waitpid(child, 0)
    finally:
        os.close(errors)

    assert os.waitstatus_to_exitcode(status) == 129
    assert b"Processing 1 file" in said  # the stderr read is the program's
    assert_quiet(said.decode(errors="replace"))


@pytest.fixture
def busy_batch(tmp_path) -> list[str]:
    """Three files big enough to keep the loop busy reading for a second at --delay 0."""
    rows = "".join(f"T{n},C{n % 97},{n % 500}.25,2024-01-{n % 28 + 1:02d},c{n % 7}\n"
                   for n in range(200_000))
    paths = []
    for name in "abc":
        (tmp_path / f"{name}.csv").write_text(HEADER + rows)
        paths.append(str(tmp_path / f"{name}.csv"))
    return paths


def test_two_quick_ctrl_cs_in_a_busy_batch_stop_it_once_quietly(busy_batch):
    child = start([sys.executable, PROCESSOR, "--delay", "0", *busy_batch])
    wait_for_line(child, "Processing 3 files")
    time.sleep(0.2)  # into the reading, where a task is running more often than not

    child.send_signal(signal.SIGINT)
    time.sleep(0.01)
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=30)

    assert child.returncode == 130
    assert_quiet(stdout, stderr)
    assert "Batch: 3 files" in stdout


def test_sigterm_stops_a_background_job_whose_sigint_is_ignored(busy_batch):
    # As `processor.py ... &` in a script starts it: SIGINT ignored, SIGTERM not.
    child = subprocess.Popen([sys.executable, PROCESSOR, "--delay", "0", *busy_batch],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    wait_for_line(child, "Processing 3 files")
    time.sleep(0.2)

    child.send_signal(signal.SIGINT)  # ignored, as the shell asked
    child.send_signal(signal.SIGTERM)
    stdout, stderr = child.communicate(timeout=30)

    assert child.returncode == 143
    assert_quiet(stdout, stderr)
    assert "Batch: 3 files" in stdout


def test_a_second_signal_as_the_first_schedules_its_cancel_is_only_noted():
    handled = processor.signals_not_ignored()
    if len(handled) < 2:
        pytest.skip("fewer than two stop signals are handled here (ignored from the start)")
    first, second = handled[:2]
    loop = asyncio.new_event_loop()
    task = loop.create_task(asyncio.sleep(30))
    stop = processor.StopSignals()
    statuses_when_scheduled: list[int | None] = []
    real_call_soon_threadsafe = loop.call_soon_threadsafe

    def call_soon_threadsafe(callback, *args):
        # What the status would be were the cancel run at once: the signal already recorded.
        statuses_when_scheduled.append(stop.received)
        if len(statuses_when_scheduled) == 1:
            second_handler(second, None)  # a second signal lands here, in the first's handler
        return real_call_soon_threadsafe(callback, *args)

    loop.call_soon_threadsafe = call_soon_threadsafe
    try:
        with stop, stop.cancelling(task):
            # The handlers called as a signal calls them: between two steps of the main thread.
            second_handler = signal.getsignal(second)
            signal.getsignal(first)(first, None)

            assert stop.received == first
            assert statuses_when_scheduled == [first]  # one cancel, after the signal was noted
            assert not task.done()  # the cancel comes at the loop's next turn
        with suppress(asyncio.CancelledError):
            loop.run_until_complete(task)
        assert task.cancelled()  # by the cancel the first signal scheduled
    finally:
        if not task.done():  # a failed assertion above: the task still to be ended
            task.cancel()
            with suppress(asyncio.CancelledError):
                loop.run_until_complete(task)
        loop.close()
