"""--watch DIR: files taken from DIR/incoming only once complete, claimed by one rename, their
results forced to DIR/results.jsonl before they move on, and nothing lost to Ctrl-C or kill -9."""
import asyncio
import gzip
import hashlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import pytest

import processor
from processor import Sighting, Signature, WatchFailed, WatchSession, main, watch_folders

PROCESSOR = str(Path(__file__).resolve().parent.parent / "processor.py")
HEADER = "transaction_id,customer_id,amount,date,category\n"
GOOD = (HEADER + "T1,C1,12.50,2024-01-05,dining\n"
                 "T2,C2,7.25,2024-02-01,fuel\n"
                 "T3,C3,oops,2024-02-02,fuel\n"
                 "T4,C1,0.25,2024-01-20,dining\n")
NO_AMOUNT = "transaction_id,customer_id,date,category\nT1,C1,2024-01-05,dining\n"


def rows_of(count: int) -> str:
    return "".join(f"T{n},C1,1.00,2024-01-01,fuel\n" for n in range(count))


def drop(folder: str | Path, name: str, text: str) -> Path:
    """Put a file in a folder, as a client does."""
    path = Path(folder) / name
    path.write_text(text)
    return path


def names_in(folder: str | Path) -> list[str]:
    return sorted(os.listdir(folder))


def read_results(root: Path) -> list[dict]:
    """Return every line of root/results.jsonl, parsed: a line that does not parse fails."""
    return [json.loads(line) for line in (root / "results.jsonl").read_text().splitlines()]


# --- Pure parts ---

@pytest.mark.parametrize("name, watched", [
    ("client.csv", True),
    ("client.csv.part", False),
    ("client.csv.tmp", False),
    ("client.csv~", False),
    (".client.csv", False),
    ("client.txt", False),
    ("CLIENT.CSV", True),  # in any case, as for a directory on the command line
    ("client.csv.gz", True),
    ("client.csv.gz.part", False),
    ("client.gz", False),
], ids=["csv", "part", "tmp", "tilde", "hidden", "txt", "upper-case", "gz", "gz-part", "gz-only"])
def test_only_csv_names_that_no_upload_convention_marks_are_watched(name, watched):
    assert processor.is_csv_name(name) is watched


def test_a_file_is_settled_once_it_has_looked_the_same_for_the_settle_time_oldest_first():
    seen = {"grows.csv": Sighting(Signature(10, 1), 0.0),
            "touched.csv": Sighting(Signature(10, 1), 0.0),
            "new.csv": Sighting(Signature(10, 5), 4.0),
            "b.csv": Sighting(Signature(10, 3), 1.0),
            "a.csv": Sighting(Signature(10, 4), 2.0)}
    now = {"grows.csv": Signature(20, 1), "touched.csv": Signature(10, 2),
           "new.csv": Signature(10, 5), "b.csv": Signature(10, 3), "a.csv": Signature(10, 4),
           "arrived.csv": Signature(10, 0)}

    seen = processor.update_sightings(seen, now, 6.0)

    assert seen["grows.csv"].since == seen["touched.csv"].since == seen["arrived.csv"].since == 6.0
    assert (seen["b.csv"].since, seen["a.csv"].since, seen["new.csv"].since) == (1.0, 2.0, 4.0)
    # At 6.0, b.csv has been unchanged for 5 s, a.csv for 4 s, new.csv for only 2 s.
    assert processor.settled_names(seen, 6.0, 3.0) == ["b.csv", "a.csv"]
    assert processor.settled_names(seen, 6.0, 5.0) == ["b.csv"]
    # With no settle time, two looks that agree are enough, as for new.csv; not one look.
    assert processor.settled_names(seen, 6.0, 0.0) == ["b.csv", "a.csv", "new.csv"]


def test_the_default_settle_time_outlasts_the_3_second_stall_that_was_seen():
    assert processor.WATCH_SETTLE_S > 3


def test_a_taken_name_gets_the_first_free_number(tmp_path):
    (tmp_path / "x.csv").write_text("")
    (tmp_path / "x-2.csv").write_text("")

    assert processor.free_path(str(tmp_path), "x.csv") == str(tmp_path / "x-3.csv")
    assert processor.free_path(str(tmp_path), "y.csv") == str(tmp_path / "y.csv")


def test_a_taken_gzipped_name_keeps_its_csv_gz_extension(tmp_path):
    (tmp_path / "x.CSV.GZ").write_text("")

    assert processor.free_path(str(tmp_path), "x.CSV.GZ") == str(tmp_path / "x-2.CSV.GZ")


def test_the_status_line_counts_done_failed_processing_and_waiting():
    session = WatchSession(watch_folders("inbox"), done=12, failed=1, waiting=3,
                           processing={"inbox/processing/a.csv", "inbox/processing/b.csv"})

    assert processor.format_watch_status(session) == \
        "watching inbox: 12 done, 1 failed, 2 processing, 3 waiting"


def test_the_summary_says_what_the_session_did_and_what_went_back():
    session = WatchSession(watch_folders("inbox"), done=4, failed=1,
                           put_back=["inbox/incoming/big.csv", "inbox/incoming/huge.csv"])

    assert processor.format_watch_summary(session, 61.25, 200) == (
        "Stopped watching inbox after 61.2 s: 5 files processed (4 done, 1 failed)\n"
        "Put back in incoming/, to be processed next time: big.csv, huge.csv\n"
        "Results: inbox/results.jsonl")


@pytest.mark.parametrize("content, kept, cut", [
    (b'{"a": 1}\n{"b": 2}\n', b'{"a": 1}\n{"b": 2}\n', False),
    (b'{"a": 1}\n{"b":', b'{"a": 1}\n', True),
    (b'{"b":', b"", True),
    (b"", b"", False),
    (b"x" * 100_000 + b"\n" + b"y" * 70_000, b"x" * 100_000 + b"\n", True),  # past one block
], ids=["whole", "torn", "only-torn", "empty", "long-lines"])
def test_a_line_cut_short_at_the_end_of_the_results_is_removed(tmp_path, content, kept, cut):
    path = tmp_path / "results.jsonl"
    path.write_bytes(content)

    assert processor.cut_torn_line(str(path)) is cut
    assert path.read_bytes() == kept


def test_a_missing_results_file_has_no_torn_line(tmp_path):
    assert processor.cut_torn_line(str(tmp_path / "results.jsonl")) is False


# --- Opening the folder ---

def test_the_folders_are_created_and_a_second_lock_is_refused(tmp_path):
    root = tmp_path / "inbox"
    folders, lock = processor.open_watch_folder(str(root))
    try:
        with pytest.raises(processor.WatchUnusable,
                           match=f"already being watched \\(by process {os.getpid()}\\)"):
            processor.open_watch_folder(str(root))
    finally:
        os.close(lock)

    assert names_in(root) == [".processor.lock", "done", "failed", "incoming", "processing",
                              "results.jsonl"]
    os.close(processor.open_watch_folder(str(root))[1])  # closed, the lock is free again


def test_a_file_where_the_folder_should_be_is_refused(tmp_path):
    (tmp_path / "inbox").write_text("")

    with pytest.raises(processor.WatchUnusable, match="it is a file, not a folder"):
        processor.open_watch_folder(str(tmp_path / "inbox"))


def test_folders_on_two_file_systems_are_refused_and_the_lock_let_go(tmp_path, monkeypatch):
    real_stat = os.stat

    def stat_with_done_elsewhere(path, *args, **kwargs):
        stats = real_stat(path, *args, **kwargs)
        if os.path.basename(path) == "done":  # as if a disk were mounted there
            return os.stat_result((*stats[:2], stats.st_dev + 1, *stats[3:10]))
        return stats

    monkeypatch.setattr(os, "stat", stat_with_done_elsewhere)
    with pytest.raises(processor.WatchUnusable, match="on different file systems"):
        processor.open_watch_folder(str(tmp_path / "inbox"))
    monkeypatch.undo()

    os.close(processor.open_watch_folder(str(tmp_path / "inbox"))[1])  # not left locked


# --- The watcher, in this process ---

@asynccontextmanager
async def watching(root: Path, *, max_concurrent: int = 3, delay: float = 0, retries: int = 0,
                   retry_delay: float = 0.5, **options):
    """Run the watcher on root with quick looks, no settle time and no pause; yield its session
    and task."""
    folders, lock = processor.open_watch_folder(str(root))
    session = WatchSession(folders)
    settings = processor.Settings(max_concurrent=max_concurrent, delay=delay, retries=retries,
                                  retry_delay=retry_delay)
    options = {"settle": 0.0, **options}
    task = asyncio.create_task(processor.watch_folder(session, settings, poll=0.01, **options))
    try:
        yield session, task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        os.close(lock)


async def wait_until(condition, seconds: float = 5.0) -> None:
    """Wait until condition() is true; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the watcher never got there"
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_a_dropped_file_ends_in_done_with_its_result_in_results_jsonl(tmp_path):
    root = tmp_path / "inbox"
    async with watching(root) as (session, task):
        dropped = drop(root / "incoming", "client.csv", GOOD)
        await wait_until(lambda: session.done == 1)

    [line] = read_results(root)
    assert names_in(root / "done") == ["client.csv"]
    assert names_in(root / "incoming") == names_in(root / "processing") == []
    assert line["filename"] == str(root / "done" / "client.csv")
    assert line["status"] == "completed"
    assert line["total_transactions"] == 3
    assert line["total_amount_exact"] == "20.00"  # 12.50 + 7.25 + 0.25
    assert line["average_transaction"] == pytest.approx(6.6666666667)
    assert line["top_category"] == "dining"
    assert line["date_range"] == {"earliest": "2024-01-05", "latest": "2024-02-01"}
    assert line["invalid_rows"] == 1
    assert line["row_errors"][0]["line"] == 4
    assert line["sha256"] == hashlib.sha256(GOOD.encode()).hexdigest()
    assert line["finished_at"].endswith("+00:00")
    assert (root / "done" / "client.csv").read_text() == GOOD
    assert not dropped.exists()


@pytest.mark.asyncio
async def test_an_upload_that_stalls_for_less_than_the_settle_time_is_taken_whole(tmp_path):
    root = tmp_path / "inbox"
    rows = [f"T{n},C1,1.00,2024-01-01,a\n" for n in range(2000)]
    content = (HEADER + "".join(rows)).encode()
    async with watching(root, settle=1.0) as (session, task):
        with open(root / "incoming" / "slow.csv", "wb") as upload:
            upload.write(content[:30000])  # a torn line: 30,000 is not at a row's end
            upload.flush()
            await asyncio.sleep(0.6)  # the client stalls; the watcher looks 60 times meanwhile
            assert names_in(root / "processing") == []
            upload.write(content[30000:])
        await wait_until(lambda: session.done + session.failed == 1)

    [line] = read_results(root)
    assert line["status"] == "completed"
    assert (line["total_transactions"], line["invalid_rows"]) == (2000, 0)
    assert line["total_amount_exact"] == "2000.00"


@pytest.mark.asyncio
async def test_the_result_is_on_the_disk_before_the_file_leaves_processing(tmp_path, monkeypatch):
    root = tmp_path / "inbox"
    seen_at_fsync = []
    real_fsync = os.fsync

    def fsync_looking(descriptor):
        seen_at_fsync.append(((root / "results.jsonl").read_text().count("\n"),
                              names_in(root / "processing")))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync_looking)
    async with watching(root) as (session, task):
        drop(root / "incoming", "client.csv", GOOD)
        await wait_until(lambda: session.done == 1)

    assert seen_at_fsync == [(1, ["client.csv"])]  # the line written, the file not yet moved
    assert names_in(root / "done") == ["client.csv"]


@pytest.mark.asyncio
async def test_a_file_that_cannot_be_processed_ends_in_failed(tmp_path):
    root = tmp_path / "inbox"
    async with watching(root) as (session, task):
        drop(root / "incoming", "no_amount.csv", NO_AMOUNT)
        await wait_until(lambda: session.failed == 1)

    [line] = read_results(root)
    assert names_in(root / "failed") == ["no_amount.csv"]
    assert names_in(root / "done") == []
    assert line["status"] == "error"
    assert line["error"] == "Header lacks required column(s): amount"
    assert line["filename"] == str(root / "failed" / "no_amount.csv")


@pytest.mark.asyncio
async def test_the_same_name_arriving_twice_keeps_both_files_in_done(tmp_path):
    root = tmp_path / "inbox"
    second = HEADER + "T9,C9,1.00,2024-03-01,fuel\n"
    async with watching(root) as (session, task):
        drop(root / "incoming", "daily.csv", GOOD)
        await wait_until(lambda: session.done == 1)
        drop(root / "incoming", "daily.csv", second)
        await wait_until(lambda: session.done == 2)

    assert names_in(root / "done") == ["daily-2.csv", "daily.csv"]
    assert (root / "done" / "daily.csv").read_text() == GOOD
    assert (root / "done" / "daily-2.csv").read_text() == second
    assert [line["total_transactions"] for line in read_results(root)] == [3, 1]


@pytest.mark.asyncio
async def test_a_name_still_in_processing_is_not_claimed_again_until_it_has_left(
        tmp_path, monkeypatch):
    root = tmp_path / "inbox"
    first = HEADER + rows_of(1000)
    looks = []
    real_look = processor.look_at_folder

    def counting_looks(folder):
        looks.append(folder)
        return real_look(folder)

    monkeypatch.setattr(processor, "look_at_folder", counting_looks)
    async with watching(root, delay=5) as (session, task):
        drop(root / "incoming", "daily.csv", first)
        await wait_until(lambda: session.processing)
        drop(root / "incoming", "daily.csv", GOOD)
        looks_then = len(looks)
        await wait_until(lambda: len(looks) >= looks_then + 3)  # stable twice over by now

        assert (root / "processing" / "daily.csv").read_text() == first
        assert names_in(root / "incoming") == ["daily.csv"]
        assert session.waiting == 1

    assert (root / "incoming" / "daily.csv").read_text() == GOOD
    assert (root / "incoming" / "daily-2.csv").read_text() == first  # put back beside it


@pytest.mark.asyncio
async def test_a_claimed_file_no_longer_counts_as_waiting(tmp_path, monkeypatch):
    root = tmp_path / "inbox"
    waiting_at_start = []
    real_process_file = processor.process_file

    async def noting_waiting(filename, **options):
        waiting_at_start.append(session.waiting)
        return await real_process_file(filename, **options)

    monkeypatch.setattr(processor, "process_file", noting_waiting)
    async with watching(root) as (session, task):
        drop(root / "incoming", "client.csv", GOOD)
        await wait_until(lambda: session.done == 1)

    assert waiting_at_start == [0]


@pytest.mark.asyncio
async def test_a_file_that_grows_between_looks_is_taken_only_once_it_stops(tmp_path, monkeypatch):
    root = tmp_path / "inbox"
    growing = drop(tmp_path, "growing.csv", HEADER)  # moved into incoming/ by the first look
    looks_at_claim = []
    real_look, real_claim = processor.look_at_folder, processor.claim
    looks = 0

    def look_while_growing(folder):
        nonlocal looks
        looks += 1
        if looks == 1:
            os.rename(growing, os.path.join(folder, "growing.csv"))
        elif looks <= 5:  # a client still writing: a row more before each of the next four looks
            with open(os.path.join(folder, "growing.csv"), "a") as file:
                file.write(f"T{looks},C1,1.00,2024-01-01,fuel\n")
        return real_look(folder)

    def claim_counting_looks(name, folders):
        looks_at_claim.append(looks)
        return real_claim(name, folders)

    monkeypatch.setattr(processor, "look_at_folder", look_while_growing)
    monkeypatch.setattr(processor, "claim", claim_counting_looks)
    async with watching(root) as (session, task):
        await wait_until(lambda: session.done == 1)

    assert looks_at_claim == [6]  # looks 5 and 6 were the first two alike
    assert read_results(root)[0]["total_transactions"] == 4  # every row the client wrote


@pytest.mark.asyncio
async def test_no_more_than_max_concurrent_files_are_in_processing_at_once(tmp_path, monkeypatch):
    root = tmp_path / "inbox"
    in_processing = []
    real_process_file = processor.process_file

    async def counting(filename, **options):
        in_processing.append(len(os.listdir(root / "processing")))
        await asyncio.sleep(0.02)  # long enough for the watcher to look again meanwhile
        return await real_process_file(filename, **options)

    monkeypatch.setattr(processor, "process_file", counting)
    for number in range(6):
        drop(tmp_path, f"c{number}.csv", GOOD)
    async with watching(root, max_concurrent=2) as (session, task):
        for number in range(6):
            os.rename(tmp_path / f"c{number}.csv", root / "incoming" / f"c{number}.csv")
        await wait_until(lambda: session.done == 6)

    assert len(in_processing) == 6
    assert max(in_processing) == 2


@pytest.mark.asyncio
async def test_cancelled_mid_file_the_file_goes_back_to_incoming_with_no_result(tmp_path):
    root = tmp_path / "inbox"
    async with watching(root, delay=5) as (session, task):
        drop(root / "incoming", "slow.csv", HEADER + rows_of(1000))
        await wait_until(lambda: session.processing)
        await asyncio.sleep(0)  # into its first pause

    assert task.cancelled()
    assert names_in(root / "incoming") == ["slow.csv"]
    assert names_in(root / "processing") == []
    assert read_results(root) == []
    assert session.put_back == [str(root / "incoming" / "slow.csv")]


@pytest.mark.asyncio
async def test_a_result_that_cannot_be_recorded_stops_the_watcher_and_puts_the_others_back(
        tmp_path, monkeypatch):
    root = tmp_path / "inbox"

    def disk_full(path, line):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(processor, "append_durably", disk_full)
    drop(tmp_path, "slow.csv", HEADER + rows_of(1000))
    async with watching(root, max_concurrent=2, delay=5) as (session, task):
        os.rename(tmp_path / "slow.csv", root / "incoming" / "slow.csv")  # claimed first
        await wait_until(lambda: session.processing)
        drop(root / "incoming", "quick.csv", GOOD)
        with pytest.raises(WatchFailed, match="No space left on device"):
            await task

    assert names_in(root / "incoming") == ["quick.csv", "slow.csv"]
    assert names_in(root / "processing") == names_in(root / "done") == []


@pytest.mark.asyncio
async def test_a_file_waiting_to_retry_does_not_keep_another_from_starting(tmp_path, monkeypatch):
    root = tmp_path / "inbox"
    calls: list[str] = []
    retries: list[str] = []
    real_process_file = processor.process_file

    async def failing_first(filename, **options):
        calls.append(os.path.basename(filename))
        if calls == ["flaky.csv"]:  # as a client's file still being uploaded would
            return processor.file_result(filename, "error", error="Permission denied",
                                         retryable=True)
        return await real_process_file(filename, **options)

    monkeypatch.setattr(processor, "process_file", failing_first)
    # One slot, and a retry 30 s away (the longest wait there is): only if the waiting file
    # holds no place can the second file be processed while the test waits.
    async with watching(root, max_concurrent=1, retries=1, retry_delay=3600,
                        on_retry=lambda filename, wait, error: retries.append(filename)) as (
            session, task):
        drop(root / "incoming", "flaky.csv", GOOD)
        await wait_until(lambda: retries)
        drop(root / "incoming", "second.csv", GOOD)
        await wait_until(lambda: session.done == 1)

        assert calls == ["flaky.csv", "second.csv"]
        assert names_in(root / "processing") == ["flaky.csv"]
        assert names_in(root / "done") == ["second.csv"]


@pytest.mark.asyncio
async def test_with_db_each_result_is_saved_and_the_session_is_one_batch(tmp_path):
    root = tmp_path / "inbox"
    db = processor.DatabaseWriter(str(tmp_path / "results.db"), processor.Settings(delay=0), [])
    async with watching(root, on_result=db.save) as (session, task):
        drop(root / "incoming", "client.csv", GOOD)
        drop(root / "incoming", "no_amount.csv", NO_AMOUNT)
        await wait_until(lambda: session.done + session.failed == 2)
    db.finish(interrupted=bool(session.put_back))

    with sqlite3.connect(tmp_path / "results.db") as connection:
        batches = connection.execute("SELECT state, file_count FROM batches").fetchall()
        files = connection.execute("SELECT filename, status, total_amount FROM file_results"
                                   " ORDER BY filename").fetchall()
    assert batches == [("completed", 2)]
    assert files == [(str(root / "done" / "client.csv"), "completed", "20.00"),
                     (str(root / "failed" / "no_amount.csv"), "error", "0")]


@pytest.mark.asyncio
async def test_off_a_terminal_the_status_line_is_printed_every_interval(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    monkeypatch.setattr(processor, "MONITOR_INTERVAL_S", 0.01)
    session = WatchSession(watch_folders("inbox"), done=2)

    task = asyncio.create_task(processor.show_watch_status(session))
    await wait_until(lambda: log.getvalue().count("\n") >= 2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert log.getvalue().splitlines()[0] == \
        "watching inbox: 2 done, 0 failed, 0 processing, 0 waiting"
    assert "\r" not in log.getvalue()


@pytest.mark.asyncio
async def test_on_a_terminal_the_spinner_shows_the_status_and_is_erased(fake_terminal):
    terminal = fake_terminal()
    session = WatchSession(watch_folders("inbox"), failed=1)

    task = asyncio.create_task(processor.show_watch_status(session))
    await asyncio.sleep(0)
    shown = terminal.visible_line()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert shown == "\\ watching inbox: 0 done, 1 failed, 0 processing, 0 waiting"
    assert terminal.visible_line().strip() == ""


# --- The command line ---

@pytest.mark.parametrize("args, message", [
    (["--watch", "inbox", "a.csv"], "--watch takes no FILE_OR_DIR"),
    (["--watch", "inbox", "--json"], "--json cannot be combined with --watch"),
    (["--watch", "inbox", "--timeline"], "--timeline cannot be combined with --watch"),
    (["--watch", "inbox", "--rejects", "r"], "--rejects cannot be combined with --watch"),
    (["--poll", "0.5", "a.csv"], "--poll needs --watch"),
    (["--watch", "inbox", "--poll", "0"], "must be more than 0 seconds"),
    (["--settle", "5", "a.csv"], "--settle needs --watch"),
    (["--watch", "inbox", "--settle", "-1"], "--settle"),
], ids=["files", "json", "timeline", "rejects", "poll-alone", "poll-zero", "settle-alone",
        "settle-negative"])
def test_options_that_do_not_go_with_watch_are_usage_errors(args, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(args)

    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def start_watcher(root: Path, *options: str) -> subprocess.Popen:
    # SIGINT is ignored in processes started in the background; the program must see it here.
    return subprocess.Popen(
        [sys.executable, PROCESSOR, "--watch", str(root), "--poll", "0.05", "--settle", "0",
         *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the watcher never got there"
        time.sleep(0.02)


def stop(watcher: subprocess.Popen, how: int = signal.SIGINT) -> tuple[str, str]:
    watcher.send_signal(how)
    return watcher.communicate(timeout=30)


def test_a_second_watcher_on_the_same_folder_exits_2_at_once(tmp_path):
    root = tmp_path / "inbox"
    first = start_watcher(root)
    try:
        wait_for(lambda: (root / "incoming").is_dir())

        second = subprocess.run([sys.executable, PROCESSOR, "--watch", str(root)],
                                capture_output=True, text=True, timeout=30)
    finally:
        stop(first)

    assert second.returncode == 2
    assert second.stderr == (f"processor.py: error: {root} is already being watched (by process "
                             f"{first.pid}); only one watcher per folder\n")
    assert second.stdout == ""


def test_the_end_of_each_file_is_printed_on_stderr_as_it_happens(tmp_path):
    root = tmp_path / "inbox"
    watcher = start_watcher(root, "--delay", "0")
    wait_for(lambda: (root / "incoming").is_dir())
    drop(root / "incoming", "client.csv", GOOD)
    wait_for(lambda: (root / "done" / "client.csv").exists())

    stdout, stderr = stop(watcher)

    assert f"finished {root / 'done' / 'client.csv'} (3 valid, 1 rejected)\n" in stderr


def test_the_watcher_reads_gzipped_files_with_the_reading_options(tmp_path):
    root = tmp_path / "inbox"
    watcher = start_watcher(root, "--delay", "0", "--decimal-comma")
    wait_for(lambda: (root / "incoming").is_dir())
    text = "transaction_id;customer_id;amount;date;category\nT1;C1;2,50;2024-01-05;fees\n"
    (root / "incoming" / "EUROPE.CSV.GZ").write_bytes(gzip.compress(text.encode()))
    wait_for(lambda: (root / "done" / "EUROPE.CSV.GZ").exists())

    stop(watcher)

    [line] = read_results(root)
    assert line["delimiter"] == ";"
    assert line["total_amount_exact"] == "2.50"


def test_a_file_left_in_processing_is_recovered_at_start(tmp_path):
    root = tmp_path / "inbox"
    (root / "processing").mkdir(parents=True)
    drop(root / "processing", "left.csv", GOOD)
    watcher = start_watcher(root, "--delay", "0")
    wait_for(lambda: (root / "done" / "left.csv").exists())

    stdout, stderr = stop(watcher)

    assert watcher.returncode == 130
    assert ("processor.py: left.csv was left in processing/ by a run that stopped; moved back "
            "to incoming/ to be processed again\n") in stderr
    assert [line["total_transactions"] for line in read_results(root)] == [3]


@pytest.mark.parametrize("how, status", [
    (signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
    ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_stop_signal_mid_file_puts_it_back_in_incoming_and_exits_with_its_status(tmp_path, how,
                                                                                  status):
    root = tmp_path / "inbox"
    watcher = start_watcher(root, "--delay", "1")
    wait_for(lambda: (root / "incoming").is_dir())
    drop(root / "incoming", "slow.csv", HEADER + rows_of(1000))
    wait_for(lambda: (root / "processing" / "slow.csv").exists())

    stdout, stderr = stop(watcher, how)

    assert watcher.returncode == status
    assert names_in(root / "incoming") == ["slow.csv"]
    assert names_in(root / "processing") == []
    assert read_results(root) == []
    assert "Put back in incoming/, to be processed next time: slow.csv\n" in stdout
    assert stdout.startswith(f"Stopped watching {root} after ")
    assert "Traceback" not in stdout + stderr


def test_after_kill_9_mid_file_a_restart_processes_each_file_exactly_once(tmp_path):
    root = tmp_path / "inbox"
    for age, name, text in ((30, "first.csv", GOOD), (20, "slow.csv", HEADER + rows_of(2000)),
                            (10, "last.csv", GOOD)):
        path = drop(tmp_path, name, text)
        os.utime(path, (time.time() - age,) * 2)  # so the watcher takes them in this order
    (root / "incoming").mkdir(parents=True)
    for name in ("first.csv", "slow.csv", "last.csv"):
        os.rename(tmp_path / name, root / "incoming" / name)
    watcher = start_watcher(root, "--max-concurrent", "1", "--delay", "1")
    wait_for(lambda: (root / "processing" / "slow.csv").exists())

    stop(watcher, signal.SIGKILL)
    assert names_in(root / "done") == ["first.csv"]
    assert names_in(root / "processing") == ["slow.csv"]
    assert names_in(root / "incoming") == ["last.csv"]
    watcher = start_watcher(root, "--delay", "0")
    wait_for(lambda: len(os.listdir(root / "done")) == 3)
    stdout, stderr = stop(watcher)

    lines = read_results(root)
    assert sorted(os.path.basename(line["filename"]) for line in lines) == \
        ["first.csv", "last.csv", "slow.csv"]
    assert {os.path.basename(line["filename"]): line["total_transactions"] for line in lines} == \
        {"first.csv": 3, "slow.csv": 2000, "last.csv": 3}
    assert "slow.csv was left in processing/" in stderr
    assert names_in(root / "processing") == names_in(root / "incoming") == []


# --- The dashboard ---

def test_the_dashboard_header_of_a_watch_says_what_it_watches_and_its_counts():
    session = WatchSession(watch_folders("inbox"), done=3, waiting=1)

    assert processor.format_watch_header(session, 41.25, 72) == [
        "Watching inbox/incoming (q or Ctrl-C to stop)",
        "watching inbox: 3 done, 0 failed, 0 processing, 1 waiting",
        "up 41.2 s | results in inbox/results.jsonl",
    ]


def test_the_dashboard_of_a_watch_lists_the_files_in_processing_then_the_newest_done(tmp_path):
    session = WatchSession(watch_folders(str(tmp_path)),
                           processing={str(tmp_path / "b.csv"), str(tmp_path / "a.csv")})
    batch = processor.Batch(filenames=[], settings=processor.Settings(),
                            semaphore=asyncio.Semaphore(3), slots=[None] * 3)
    (tmp_path / "a.csv").write_text("12345")
    for name in ("old.csv", "new.csv"):
        batch.results[name] = processor.file_result(name, "completed")

    assert processor.watched_files(session, batch) == {
        str(tmp_path / "a.csv"): 5, str(tmp_path / "b.csv"): 0, "new.csv": 0, "old.csv": 0}


def test_with_the_dashboard_the_watch_is_drawn_full_screen_and_q_stops_it(tmp_path):
    from test_dashboard import TerminalRun

    root = tmp_path / "inbox"
    run = TerminalRun("--watch", str(root), "--poll", "0.05", "--delay", "0", "--dashboard")
    try:
        run.wait_for(b"Watching")
        drop(root / "incoming", "client.csv", GOOD)
        run.wait_for(b"done/client.csv completed")  # its line in the list of files
        os.write(run.master, b"q")
        code = run.finish()
    finally:
        run.close()

    assert code == 130
    assert b"Slots" in run.output
    assert b"Stopped watching" in run.output
    assert b"Traceback" not in run.output
    assert b"(3 valid, 1 rejected)" not in run.output  # events are drawn, never printed over it
    assert names_in(root / "done") == ["client.csv"]
    assert [line["total_transactions"] for line in read_results(root)] == [3]


def test_a_results_line_is_strict_json_even_for_a_sum_past_the_float_range():
    tally = processor.FileTally(count=2, total=Decimal("1" + "0" * 400))
    result = processor.file_result("huge.csv", "completed", tally)

    line = json.loads(processor.results_line(result, None, "2026-11-30T00:00:00.000+00:00"),
                      parse_constant=lambda constant: pytest.fail(f"{constant} in the line"))

    assert (line["total_amount"], line["average_transaction"]) == (None, None)
    assert line["total_amount_exact"] == "1" + "0" * 400
    assert line["average_transaction_exact"] == "5" + "0" * 399


def test_the_watcher_settles_files_for_5_seconds_unless_told(tmp_path, monkeypatch, capsys):
    asked = []

    async def watch_folder(session, settings, **options):
        asked.append(options["settle"])

    monkeypatch.setattr(processor, "watch_folder", watch_folder)

    main(["--watch", str(tmp_path / "a")])
    main(["--watch", str(tmp_path / "b"), "--settle", "0.5"])

    assert asked == [5.0, 0.5]
