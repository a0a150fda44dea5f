"""--db: each result saved by a writer thread as its file finishes, whole or not at all."""
import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest

import processor
from processor import DatabaseWriter, main, process_batch

PROCESSOR = str(Path(__file__).resolve().parent.parent / "processor.py")
HEADER = "transaction_id,customer_id,amount,date,category\n"
# A float cannot hold the total: near 1.2e16 floats are 2 apart.
EXACT_FILE = (HEADER + "T1,C1,12345678901234567.89,2024-03-01,rent\n"
              "T2,C2,0.01,2024-01-15,fuel\n"
              "T3,C3,$5.00,2024-02-01,fuel\n"
              "T4,C4,0.01,2024-02-10,fuel\n")
ONE_ROW = HEADER + "T1,C1,2.50,2024-05-05,fuel\n"
FILE_COLUMNS = ("batch_id, filename, status, total_transactions, total_amount, average_transaction, "
                "top_category, earliest_date, latest_date, invalid_rows, error")


def query(path: str, sql: str) -> list[tuple]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def start_writer(path: str, filenames: list[str]) -> DatabaseWriter:
    return DatabaseWriter(path, processor.Settings(delay=0), filenames)


async def run_saving(filenames: list[str], writer: DatabaseWriter) -> dict:
    """Run a batch that hands each result to the writer, then finish the writer, as main does."""
    try:
        return await process_batch(filenames, delay=0, on_result=writer.save)
    finally:
        writer.finish()


@pytest.mark.asyncio
async def test_the_database_holds_each_result_exactly_and_its_rejected_rows(write_csv, tmp_path):
    exact = write_csv("exact.csv", EXACT_FILE)
    missing = str(tmp_path / "missing.csv")
    path = str(tmp_path / "results.db")

    await run_saving([exact, missing], start_writer(path, [exact, missing]))

    assert query(path, f"SELECT {FILE_COLUMNS} FROM file_results ORDER BY filename") == [
        # 12345678901234567.89 + 0.01 + 0.01; the average is that over 3, rounded to a float
        (1, exact, "completed", 3, "12345678901234567.91", 4115226300411522.5, "fuel",
         "2024-01-15", "2024-03-01", 1, None),
        (1, missing, "error", 0, "0", 0.0, None, None, None, 0, "No such file or directory"),
    ]
    assert query(path, "SELECT * FROM rejected_rows") == [
        (1, exact, 4, "amount '$5.00' is not a plain decimal number")]


@pytest.mark.asyncio
async def test_the_batch_row_has_its_options_utc_times_and_final_state(write_csv, tmp_path):
    first = write_csv("first.csv", EXACT_FILE)
    path = str(tmp_path / "results.db")
    before = datetime.now(timezone.utc)

    await run_saving([first], start_writer(path, [first]))

    [(batch_id, started, finished, state, max_concurrent, delay, file_count)] = query(
        path, "SELECT * FROM batches")
    assert (batch_id, state, max_concurrent, delay, file_count) == (1, "completed", 3, 0.0, 1)
    assert started.endswith("+00:00") and finished.endswith("+00:00")
    # ISO-8601 text to the millisecond: the start is at most 1 ms before the clock was read here.
    assert (before - datetime.fromisoformat(started)).total_seconds() < 0.001
    assert datetime.fromisoformat(started) <= datetime.fromisoformat(finished)


@pytest.mark.asyncio
async def test_a_finished_writer_has_saved_the_batch_and_leaves_no_thread_behind(
        write_csv, tmp_path):
    data = write_csv("data.csv", ONE_ROW)

    await run_saving([data], start_writer(str(tmp_path / "results.db"), [data]))

    saved = query(str(tmp_path / "results.db"), "SELECT filename, status, total_amount FROM file_results")
    assert saved == [(data, "completed", "2.50")]
    assert [thread for thread in threading.enumerate() if thread.name == "database writer"] == []


def test_an_unusable_path_raises_as_the_writer_starts(write_csv, tmp_path):
    data = write_csv("data.csv", ONE_ROW)

    with pytest.raises(processor.DatabaseUnusable, match="it is a directory"):
        start_writer(str(tmp_path), [data])


@pytest.mark.asyncio
async def test_every_sqlite_call_runs_off_the_event_loop_and_the_writer_ends_with_the_batch(
        write_csv, tmp_path, monkeypatch):
    threads_calling: list[int] = []
    real_connect = sqlite3.connect

    class RecordingConnection(sqlite3.Connection):
        def execute(self, *args):
            threads_calling.append(threading.get_ident())
            return super().execute(*args)

        def executemany(self, *args):
            threads_calling.append(threading.get_ident())
            return super().executemany(*args)

        def executescript(self, *args):
            threads_calling.append(threading.get_ident())
            return super().executescript(*args)

    def recording_connect(*args, **kwargs):
        threads_calling.append(threading.get_ident())
        return real_connect(*args, factory=RecordingConnection, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", recording_connect)
    names = [write_csv(f"{n}.csv", EXACT_FILE) for n in range(3)]
    writer = start_writer(str(tmp_path / "results.db"), names)

    await run_saving(names, writer)

    assert threads_calling  # the instrument saw the calls
    assert set(threads_calling) == {writer.thread.ident}
    assert writer.thread.ident != threading.get_ident()  # the event loop's thread
    assert not writer.thread.is_alive()


@pytest.mark.asyncio
async def test_a_file_is_saved_as_it_finishes_and_a_cancelled_batch_is_interrupted(
        write_csv, tmp_path, monkeypatch):
    quick = write_csv("quick.csv", EXACT_FILE)
    stuck = write_csv("stuck.csv", EXACT_FILE)
    path = str(tmp_path / "results.db")
    real_process_file = processor.process_file

    async def never_ending(filename, **options):
        if filename == stuck:
            await asyncio.Event().wait()
        return await real_process_file(filename, **options)

    monkeypatch.setattr(processor, "process_file", never_ending)
    writer = start_writer(path, [quick, stuck])
    batch = asyncio.create_task(run_saving([quick, stuck], writer))
    deadline = time.monotonic() + 10
    while not query(path, "SELECT * FROM file_results") and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    saved_while_running = query(path, "SELECT filename, status FROM file_results")

    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch

    assert saved_while_running == [(quick, "completed")]
    assert query(path, "SELECT filename, status FROM file_results") == [
        (quick, "completed"), (stuck, "cancelled")]
    assert query(path, "SELECT state, finished_at IS NOT NULL FROM batches") == [("interrupted", 1)]
    assert not writer.thread.is_alive()


def saved_so_far(path: str) -> list[tuple]:
    """Return the saved results, none while the program has not yet created the database."""
    try:
        return query(path, "SELECT * FROM file_results")
    except sqlite3.OperationalError:  # no file yet, or no tables in it yet
        return []


def test_ctrl_c_leaves_the_finished_files_in_the_database_and_the_batch_interrupted(
        write_csv, tmp_path):
    quick = write_csv("quick.csv", EXACT_FILE)
    slow = write_csv("slow.csv", HEADER + "".join(f"T{n},C1,1.00,2024-01-01,a\n" for n in range(1000)))
    path = str(tmp_path / "results.db")
    # SIGINT is ignored in processes started in the background; the program must see it here.
    child = subprocess.Popen(
        [sys.executable, PROCESSOR, "--delay", "1", "--db", path, quick, slow],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not saved_so_far(path):
        time.sleep(0.05)

    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=30)

    assert child.returncode == 130
    assert query(path, f"SELECT {FILE_COLUMNS} FROM file_results") == [
        (1, quick, "completed", 3, "12345678901234567.91", 4115226300411522.5, "fuel",
         "2024-01-15", "2024-03-01", 1, None),
        (1, slow, "cancelled", 0, "0", 0.0, None, None, None, 0, None),
    ]
    assert query(path, "SELECT state FROM batches") == [("interrupted",)]
    assert f"Saved to {path} as batch 1" in stderr
    assert "Traceback" not in stderr


def test_a_second_run_adds_a_batch_and_leaves_the_first_untouched(write_csv, tmp_path, capsys):
    first = write_csv("first.csv", EXACT_FILE)
    second = write_csv("second.csv", ONE_ROW)
    path = str(tmp_path / "results.db")
    assert main(["--delay", "0", "--db", path, first]) == 0
    first_batch = [query(path, f"SELECT * FROM {table}")
                   for table in ("batches", "file_results", "rejected_rows")]

    assert main(["--delay", "0", "--db", path, second]) == 0

    assert [query(path, f"SELECT * FROM {table} WHERE batch_id = 1")
            for table in ("batches", "file_results", "rejected_rows")] == first_batch
    assert query(path, "SELECT batch_id, state, file_count FROM batches WHERE batch_id = 2") == [
        (2, "completed", 1)]
    assert query(path, "SELECT filename, total_amount FROM file_results WHERE batch_id = 2") == [
        (second, "2.50")]
    assert f"Saved to {path} as batch 2" in capsys.readouterr().err


@pytest.mark.parametrize("name, reason", [
    (".", "it is a directory"),
    ("absent/results.db", "there is no folder {folder}/absent"),
    ("notes.db", "file is not a database"),
], ids=["directory", "missing-folder", "not-a-database"])
def test_an_unusable_database_path_exits_2_with_one_line_before_any_file(
        name, reason, write_csv, tmp_path):
    data = write_csv("data.csv", EXACT_FILE)
    (tmp_path / "notes.db").write_text("These are notes, not a database. " * 10)
    path = os.path.join(tmp_path, name)

    done = subprocess.run([sys.executable, PROCESSOR, "--delay", "0", "--db", path, data],
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"processor.py: error: cannot use {path} as a SQLite database: "
        + reason.format(folder=tmp_path)]


def refuse_rejected_rows_of(path: str, name_ending: str) -> None:
    """Make the database fail as a full disk would when a file's rejected rows are written,
    after its result row: the whole file's transaction must roll back."""
    connection = sqlite3.connect(path)
    connection.executescript(processor.DATABASE_SCHEMA + f"""
        CREATE TRIGGER refuse BEFORE INSERT ON rejected_rows WHEN NEW.filename LIKE '%{name_ending}'
        BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;""")
    connection.close()


def test_a_write_that_fails_mid_batch_is_one_line_the_report_is_whole_and_the_exit_is_1(
        write_csv, tmp_path, capsys):
    kept = write_csv("kept.csv", ONE_ROW)
    refused = write_csv("refused.csv", EXACT_FILE)
    path = str(tmp_path / "results.db")
    refuse_rejected_rows_of(path, "refused.csv")

    code = main(["--delay", "0", "--db", path, kept, refused])

    out, err = capsys.readouterr()
    assert code == 1
    assert [line.split()[:2] for line in out.splitlines()[2:4]] == [
        [kept, "completed"], [refused, "completed"]]
    assert [line for line in err.splitlines() if "could not save" in line] == [
        f"processor.py: could not save to {path} (batch 1): 1 write failed, the first: "
        f"{refused}: database or disk is full"]
    # The refused file's result row went with its rejected row: saved whole or not at all.
    assert query(path, "SELECT filename FROM file_results") == [(kept,)]
    assert query(path, "SELECT * FROM rejected_rows") == []
    assert query(path, "SELECT state FROM batches") == [("completed",)]


@pytest.mark.asyncio
async def test_a_database_locked_beyond_the_timeout_fails_the_writes_not_the_batch(
        write_csv, tmp_path, monkeypatch):
    monkeypatch.setattr(processor, "DATABASE_TIMEOUT_S", 0.05)
    data = write_csv("data.csv", EXACT_FILE)
    path = str(tmp_path / "results.db")
    writer = start_writer(path, [data])
    other_program = sqlite3.connect(path, isolation_level=None)
    other_program.execute("BEGIN IMMEDIATE")  # holds the write lock until it rolls back
    try:
        batch = await run_saving([data], writer)
    finally:
        other_program.execute("ROLLBACK")
        other_program.close()

    assert batch["results"][data]["status"] == "completed"
    assert writer.failures == [f"{data}: database is locked",
                               "the batch's final state: database is locked"]
    assert not writer.thread.is_alive()


@pytest.mark.asyncio
async def test_a_file_name_that_is_not_utf8_is_saved_with_its_bytes_escaped(write_csv, tmp_path):
    name = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9.csv")
    Path(name).write_text(ONE_ROW)
    path = str(tmp_path / "results.db")

    await run_saving([name], start_writer(path, [name]))

    assert query(path, "SELECT filename, status FROM file_results") == [
        (f"{tmp_path}/caf\\xe9.csv", "completed")]


def test_ctrl_c_while_the_database_is_opening_exits_130_before_any_file_with_nothing_saved(
        write_csv, tmp_path, monkeypatch, capsys):
    data = write_csv("data.csv", EXACT_FILE)

    def interrupted_while_opening(*args, **options):
        raise KeyboardInterrupt  # as Ctrl-C does while the database is locked by another program

    monkeypatch.setattr(processor, "DatabaseWriter", interrupted_while_opening)

    code = main(["--delay", "0", "--db", str(tmp_path / "results.db"), data])

    out, err = capsys.readouterr()
    assert code == 130
    assert out == ""  # no file had begun: nothing to report
    assert err == (f"processor.py: nothing saved to {tmp_path / 'results.db'}: stopped while it "
                   "was opened\n")


def test_ctrl_c_while_the_writer_finishes_keeps_the_report_and_says_what_may_be_unsaved(
        write_csv, tmp_path, monkeypatch, capsys):
    data = write_csv("data.csv", EXACT_FILE)
    writers: list[DatabaseWriter] = []
    real_finish = DatabaseWriter.finish

    def interrupted_while_waiting(writer, **options):
        def wait_interrupted(timeout=None):
            raise KeyboardInterrupt  # as each of two signals does in the main thread as it waits

        writers.append(writer)
        monkeypatch.setattr(writer.finished, "wait", wait_interrupted)
        return real_finish(writer, **options)

    monkeypatch.setattr(DatabaseWriter, "finish", interrupted_while_waiting)

    try:
        code = main(["--delay", "0", "--db", str(tmp_path / "results.db"), data])
    except KeyboardInterrupt:
        pytest.fail("the Ctrl-C left main as a KeyboardInterrupt, a traceback for the user")

    out, err = capsys.readouterr()
    threading.Thread.join(writers[0].thread)  # the real wait, so that no thread outlives the test
    assert code == 130
    assert out.splitlines()[2].split()[:2] == [data, "completed"]
    assert "Interrupted: every file had finished" in err
    assert err.splitlines()[-1] == (
        f"processor.py: stopped saving to {tmp_path / 'results.db'} (batch 1) at a stop signal: "
        "its last results may be missing, and the batch still reads running")


def test_the_tables_and_the_batch_are_created_in_one_transaction(tmp_path):
    path = tmp_path / "r.db"

    with pytest.raises(sqlite3.IntegrityError):  # file_count NOT NULL: the batch cannot be added
        processor.open_database(str(path), processor.Settings(), None)

    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT name FROM sqlite_master").fetchall() == []
    connection.close()


@contextmanager
def write_lock_held(path: Path) -> Iterator[None]:
    """Hold the database's write lock, as another program in a transaction does."""
    other_program = sqlite3.connect(path, isolation_level=None)
    other_program.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other_program.execute("ROLLBACK")
        other_program.close()


def finish_stopped_mid_write(path: Path, monkeypatch, *, locked: bool = False) -> DatabaseWriter:
    """Return a writer of five results whose finish() a stop signal interrupted while the
    thread was writing the first, the four others waiting in its queue; with locked, while
    another program held the write lock."""
    writing, go_on = threading.Event(), threading.Event()
    real_save = processor.save_result

    def held_save(*args):
        writing.set()
        go_on.wait(5)
        real_save(*args)

    monkeypatch.setattr(processor, "save_result", held_save)
    names = [f"f{n}.csv" for n in range(5)]
    writer = DatabaseWriter(str(path), processor.Settings(), names)
    with write_lock_held(path) if locked else nullcontext():
        for name in names:
            writer.save(processor.file_result(name, "completed"))
        writing.wait(5)  # the thread is writing the first result; four wait in the queue
        real_wait, signals = writer.finished.wait, [KeyboardInterrupt]

        def wait(timeout=None):
            if signals:
                raise signals.pop()  # as a stop signal does in the main thread while it waits
            go_on.set()
            return real_wait(timeout)

        monkeypatch.setattr(writer.finished, "wait", wait)
        assert writer.finish() is True
    return writer


def test_a_stop_signal_while_the_last_results_are_written_ends_the_batch_interrupted(
        tmp_path, monkeypatch):
    writer = finish_stopped_mid_write(tmp_path / "r.db", monkeypatch)

    with sqlite3.connect(tmp_path / "r.db") as connection:
        assert connection.execute("SELECT state, file_count FROM batches").fetchall() == \
            [("interrupted", 5)]
        assert connection.execute("SELECT filename FROM file_results").fetchall() == [("f0.csv",)]
    connection.close()
    assert writer.outcome() == (
        f"processor.py: saved to {tmp_path / 'r.db'} as batch 1 in part: a stop signal came "
        "before 4 results could be written, and the batch reads interrupted")


def test_a_failed_write_is_named_before_the_results_a_stop_signal_left_unwritten(
        tmp_path, monkeypatch):
    monkeypatch.setattr(processor, "DATABASE_TIMEOUT_S", 0.05)
    path = tmp_path / "r.db"

    writer = finish_stopped_mid_write(path, monkeypatch, locked=True)

    # The first write and the batch's end failed on the lock; the four after the signal skipped.
    assert writer.failures == ["f0.csv: database is locked",
                               "the batch's final state: database is locked"]
    assert writer.skipped == 4
    with sqlite3.connect(path) as connection:  # not "interrupted", as the skip alone would say
        assert connection.execute("SELECT state FROM batches").fetchall() == [("running",)]
    connection.close()
    assert writer.outcome() == (
        f"processor.py: could not save to {path} (batch 1): 2 writes failed, the first: "
        "f0.csv: database is locked")


def test_a_stop_signal_just_before_the_batch_is_added_still_ends_it(tmp_path, monkeypatch):
    real_open = processor.open_database

    def slow_open(*args):
        time.sleep(0.3)  # the main thread hears the signal meanwhile
        return real_open(*args)

    monkeypatch.setattr(processor, "open_database", slow_open)
    threading.Timer(0.1, signal.raise_signal, [signal.SIGINT]).start()

    with pytest.raises(KeyboardInterrupt):
        DatabaseWriter(str(tmp_path / "r.db"), processor.Settings(), ["a.csv"])

    # Waited for a moment, the thread added the batch and ended it at once.
    with sqlite3.connect(tmp_path / "r.db") as connection:
        assert connection.execute("SELECT state FROM batches").fetchall() == [("interrupted",)]
    connection.close()


def test_a_real_signal_while_the_last_results_are_written_is_waited_out(tmp_path, monkeypatch):
    go_on = threading.Event()
    real_save = processor.save_result

    def slow_save(*args):
        go_on.wait(5)
        real_save(*args)

    monkeypatch.setattr(processor, "save_result", slow_save)
    writer = DatabaseWriter(str(tmp_path / "r.db"), processor.Settings(), ["a.csv", "b.csv"])
    writer.save(processor.file_result("a.csv", "completed"))
    threading.Timer(0.1, signal.raise_signal, [signal.SIGINT]).start()  # a KeyboardInterrupt
    threading.Timer(0.3, go_on.set).start()

    assert writer.finish() is True

    # finish waited for the thread to end the batch, however the signal broke into the wait.
    assert not writer.thread.is_alive()
    with sqlite3.connect(tmp_path / "r.db") as connection:
        assert connection.execute("SELECT state FROM batches").fetchall() == [("interrupted",)]
    connection.close()
