"""--workers: large files read in worker processes, with the same results, progress on the way,
and a stop that reaches them. Every expected figure is worked out by hand or read without
workers, never by the code under test in the same way."""
import asyncio
import codecs
import functools
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import processor
from processor import ClientFiles, Workers, process_batch, read_client_file, read_using_workers

PROCESSOR = str(Path(__file__).resolve().parent.parent / "processor.py")
HEADER = "transaction_id,customer_id,amount,date,category\n"
TIMING_KEYS = ("processing_time", "work_time", "pid", "start_offset", "end_offset", "slot")


def rows(count: int, amount: str = "1.25") -> str:
    return "".join(f"T{n},C{n},{amount},2024-03-{1 + n % 28:02d},dining\n" for n in range(count))


def without_timing(result: dict) -> dict:
    return {key: value for key, value in result.items() if key not in TIMING_KEYS}


@pytest.fixture(scope="module")
def workers():
    """Three worker processes, one a slot of a batch (max_concurrent 3), started once here."""
    started = Workers(3)
    started.start()
    yield started
    started.stop()


@pytest.fixture
def start_workers():
    """Return a function that starts Workers(count) of this test's own, stopped after it (a
    test that kills one breaks their pool)."""
    started = []

    def start(count: int) -> Workers:
        workers = Workers(count)
        workers.start()
        started.append(workers)
        return workers

    yield start
    for workers in started:
        workers.stop()


@pytest.fixture
def every_file_to_a_worker(monkeypatch):
    monkeypatch.setattr(processor, "WORKER_MIN_BYTES", 0)


def odd_files(folder: Path) -> list[str]:
    """Files with something odd in each, as clients send them."""
    files = {
        "plain.csv": HEADER + rows(450),
        "quoted.csv": HEADER + rows(150) + 'Q1,C1,2.00,2024-01-01,"two\nlines"\n' + rows(120),
        "crlf.csv": (HEADER + rows(230)).replace("\n", "\r\n"),
        "rejected.csv": HEADER + rows(99) + "X1,C1,1e3,2024-01-01,dining\n" + rows(101)
        + "X2,C2,5.00,2024-02-30,fuel\n,,,,\n\nX3,C3,7.00,2024-01-01\n",
        "bad-bytes.csv": (HEADER + rows(120)).encode() + b"B1,C1,3.00,2024-01-01,caf\xe9\n",
        "semicolons.csv": (HEADER + rows(130)).replace(",", ";"),
        "utf16.csv": codecs.BOM_UTF16_LE + (HEADER + rows(140)).encode("utf-16-le"),
        "lacking.csv": "transaction_id,amount\nT1,2.00\n",
        "empty.csv": "",
        "unended.csv": HEADER + rows(100) + "U1,C1,9.99,2024-05-05,travel",
    }
    paths = []
    for name, content in files.items():
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        paths.append(str(path))
    gzipped = folder / "gzipped.csv.gz"
    gzipped.write_bytes(gzip.compress((HEADER + rows(310)).encode()))
    return paths + [str(gzipped)]


@pytest.mark.asyncio
async def test_a_corpus_of_odd_files_gives_the_same_results_key_for_key_with_workers(
        tmp_path, workers, every_file_to_a_worker, capsys):
    paths = odd_files(tmp_path)
    reader = functools.partial(read_client_file, ClientFiles(decimal_comma=False))
    rejects_here = processor.keep_rejects(tmp_path / "here", paths, reader)
    rejects_there = processor.keep_rejects(tmp_path / "there", paths, reader)

    here = await process_batch(paths, delay=0, read_file=rejects_here)
    there = await process_batch(paths, delay=0, read_file=functools.partial(
        read_using_workers, workers, rejects_there))

    for path in paths:
        assert here["results"][path]["pid"] == os.getpid()
        assert there["results"][path]["pid"] in workers.pool._processes
        expected = without_timing(here["results"][path])
        if expected["rejects_file"]:
            expected["rejects_file"] = expected["rejects_file"].replace("/here/", "/there/")
        assert without_timing(there["results"][path]) == expected
    # The figures themselves, by hand, for two of them.
    plain = there["results"][paths[0]]
    assert (plain["total_transactions"], plain["total_amount_exact"]) == (450, "562.50")
    rejected = there["results"][paths[3]]
    assert [error["line"] for error in rejected["row_errors"]] == [101, 203, 206]
    # The worker wrote each file's rejected rows, as the main process did.
    for name in os.listdir(tmp_path / "here"):
        assert (tmp_path / "there" / name).read_bytes() == (tmp_path / "here" / name).read_bytes()
    assert sorted(os.listdir(tmp_path / "here")) == ["bad-bytes.rejects.csv",
                                                      "rejected.rejects.csv"]


@pytest.mark.asyncio
async def test_a_small_file_and_standard_input_stay_in_the_main_process(tmp_path, workers,
                                                                        monkeypatch):
    small = tmp_path / "small.csv"
    small.write_text(HEADER + rows(10))
    monkeypatch.setattr(processor, "WORKER_MIN_BYTES", small.stat().st_size + 1)
    reader = functools.partial(read_client_file, ClientFiles())

    batch = await process_batch([str(small)], delay=0,
                                read_file=functools.partial(read_using_workers, workers, reader))

    assert batch["results"][str(small)]["pid"] == os.getpid()
    assert batch["results"][str(small)]["total_transactions"] == 10


@pytest.mark.asyncio
async def test_progress_of_a_file_in_a_worker_reaches_the_main_process(
        tmp_path, workers, every_file_to_a_worker):
    path = tmp_path / "slow.csv"
    path.write_text(HEADER + rows(1000))  # 10 chunks of 100 rows
    progress = processor.FileProgress()
    reader = functools.partial(read_client_file, ClientFiles())
    reading = asyncio.create_task(read_using_workers(workers, reader, str(path), delay=0.05,
                                                     progress=progress))
    seen = []
    while not reading.done():
        seen.append((progress.bytes_read, progress.tally.count))
        await asyncio.sleep(0.02)
    result = reading.result()

    assert result["total_transactions"] == 1000 and result["pid"] != os.getpid()
    midway = [(read, counted) for read, counted in seen if 0 < counted < 1000]
    assert midway, "no progress was seen while the worker read the file"
    assert all(0 < read <= path.stat().st_size for read, _ in midway)
    # The pauses were the worker's: 0.05 s after each of the 10 full chunks.
    assert result["pause_time"] == pytest.approx(0.5)


@pytest.mark.asyncio
async def test_a_cancelled_file_stops_its_worker_at_once_and_leaves_no_rejects_file(
        tmp_path, workers, every_file_to_a_worker):
    path = tmp_path / "long.csv"
    path.write_text(HEADER + rows(150) + "X,C,bad,2024-01-01,x\n" + rows(5000))
    reader = processor.keep_rejects(tmp_path / "rejects", [str(path)],
                                    functools.partial(read_client_file, ClientFiles()))
    progress = processor.FileProgress()
    # 50 chunks with a pause of 0.5 s after each: 25 s unless it is stopped.
    reading = asyncio.create_task(read_using_workers(workers, reader, str(path), delay=0.5,
                                                     progress=progress))
    while progress.tally.count < 100:
        await asyncio.sleep(0.01)
    # The worker has written the rejected row to its temporary file by now, or is about to.
    reading.cancel()
    stopped = time.perf_counter()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert time.perf_counter() - stopped < 0.1  # the task does not wait for the worker

    # The worker is told, and is free for the next file well within half a second.
    again = tmp_path / "again.csv"
    again.write_text(HEADER + rows(3))
    quick = asyncio.create_task(read_using_workers(
        workers, functools.partial(read_client_file, ClientFiles()), str(again), delay=0,
        progress=processor.FileProgress()))
    done, _ = await asyncio.wait([quick], timeout=0.5)
    assert done and quick.result()["total_transactions"] == 3
    await asyncio.sleep(0.2)  # the stopped worker removes its temporary file as it stops
    assert os.listdir(tmp_path / "rejects") == []


@pytest.mark.asyncio
async def test_a_worker_that_dies_makes_its_file_an_error_and_the_other_file_is_read_again(
        tmp_path, every_file_to_a_worker, start_workers):
    workers = start_workers(2)
    reader = functools.partial(read_client_file, ClientFiles())
    paths, tasks, progress = {}, {}, {}
    for name in ("doomed", "spared"):
        (tmp_path / name).mkdir()
        paths[name] = tmp_path / name / f"{name}.csv"
        paths[name].write_text(HEADER + rows(2000))  # 20 chunks of 100 rows
        progress[name] = processor.FileProgress()
        tasks[name] = asyncio.create_task(read_using_workers(
            workers, reader, str(paths[name]), delay=0.05, progress=progress[name]))
    while not all(file.tally.count for file in progress.values()):
        await asyncio.sleep(0.01)
    doomed = next(pid for pid in workers.pool._processes
                  if has_open_file(pid, tmp_path / "doomed"))
    os.kill(doomed, signal.SIGKILL)  # as the system's out-of-memory killer would
    doomed_result, spared_result = await tasks["doomed"], await tasks["spared"]

    assert doomed_result["status"] == "error" and doomed_result["retryable"]
    assert "its worker process died" in doomed_result["error"]
    # The pool went down with the worker, and the other file was read again, whole, in a
    # new one: 2,000 rows of 1.25.
    assert (spared_result["status"], spared_result["total_amount_exact"]) == (
        "completed", "2500.00")
    assert spared_result["pid"] in workers.pool._processes
    after = await read_using_workers(workers, reader, str(paths["doomed"]), delay=0,
                                     progress=processor.FileProgress())
    assert (after["status"], after["total_transactions"]) == ("completed", 2000)


@pytest.mark.asyncio
async def test_a_worker_that_dies_while_idle_is_replaced_and_no_file_suffers(
        tmp_path, every_file_to_a_worker, start_workers):
    workers = start_workers(1)
    path = tmp_path / "next.csv"
    path.write_text(HEADER + rows(300))
    reader = functools.partial(read_client_file, ClientFiles())
    for pid in list(workers.pool._processes):
        os.kill(pid, signal.SIGKILL)  # between two files: no file was being read
    await asyncio.sleep(0.5)  # for the pool to see it

    results = [await read_using_workers(workers, reader, str(path), delay=0,
                                        progress=processor.FileProgress())
               for _ in range(3)]  # more than the job cells there are (2)

    assert [(result["status"], result["total_amount_exact"]) for result in results] == [
        ("completed", "375.00")] * 3  # 300 x 1.25


# --- The command line ---

def big_file(folder: Path, name: str) -> str:
    """A file just over the size that goes to a worker: 30,000 rows of 1.25."""
    path = folder / name
    path.write_text(HEADER + rows(30_000))
    assert path.stat().st_size >= processor.WORKER_MIN_BYTES
    return str(path)


def test_the_command_line_gives_the_same_json_with_and_without_workers(tmp_path):
    big = big_file(tmp_path, "big.csv")
    small = tmp_path / "small.csv"
    small.write_text(HEADER + rows(7))
    command = [sys.executable, PROCESSOR, "--delay", "0", "--json", big, str(small)]

    alone = subprocess.run(command, capture_output=True, text=True, timeout=60)
    shared = subprocess.run(command + ["--workers", "2"], capture_output=True, text=True,
                            timeout=60)

    assert alone.returncode == shared.returncode == 0, shared.stderr
    here, there = json.loads(alone.stdout)["results"], json.loads(shared.stdout)["results"]
    # The small file was read by the main process, the big one by a worker.
    assert there[big]["pid"] != there[str(small)]["pid"]
    assert here[big]["pid"] == here[str(small)]["pid"]
    assert {name: without_timing(result) for name, result in here.items()} == {
        name: without_timing(result) for name, result in there.items()}
    assert there[big]["total_amount_exact"] == "37500.00"  # 30,000 x 1.25


def test_the_report_says_how_many_processes_did_the_work(tmp_path):
    paths = [big_file(tmp_path, f"big{n}.csv") for n in range(2)]

    done = subprocess.run([sys.executable, PROCESSOR, "--delay", "0", "--workers", "2",
                           "--max-concurrent", "2", *paths], capture_output=True, text=True,
                          timeout=60)

    assert done.returncode == 0, done.stderr
    # A speed-up or none, as the machine allows; but the work was done in two processes.
    assert "of reading and checking rows (CPU work, in 2 processes)" in done.stdout
    # The start is not part of the batch's elapsed time: it is told apart.
    assert "Started 2 worker processes in " in done.stderr


def test_more_workers_than_slots_are_not_started_and_a_note_says_so(tmp_path):
    big = big_file(tmp_path, "big.csv")

    done = subprocess.run([sys.executable, PROCESSOR, "--delay", "0", "--workers", "4",
                           "--max-concurrent", "2", big], capture_output=True, text=True,
                          timeout=60)

    assert done.returncode == 0, done.stderr
    assert ("processor.py: --workers 4: only 2 files are read at a time (--max-concurrent), "
            "so 2 workers; raise --max-concurrent to use more cores") in done.stderr
    assert "Started 2 worker processes in " in done.stderr


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_stops_the_workers_promptly_and_leaves_nothing_behind(tmp_path,
                                                                          signal_number):
    paths = [big_file(tmp_path, f"big{n}.csv") for n in range(2)]
    child = subprocess.Popen(
        [sys.executable, PROCESSOR, "--delay", "0.2", "--workers", "2", "--rejects",
         str(tmp_path / "rejects"), "--json", *paths],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    workers = worker_pids(child.pid)
    wait_until_reading(workers, tmp_path)  # each in a pause of 0.2 s, or the rows after it
    # As a terminal sends Ctrl-C: to the whole group, workers too (they ignore it).
    sent = time.perf_counter()
    os.killpg(child.pid, signal_number)
    stdout, stderr = communicate_or_kill(child)
    took = time.perf_counter() - sent

    assert child.returncode == 128 + signal_number, stderr
    assert "Traceback" not in stderr
    assert took < 1.0  # the exit itself; the workers' end is the part that must be under 0.5 s
    results = json.loads(stdout)["results"]
    assert [result["status"] for result in results.values()] == ["cancelled", "cancelled"]
    # The workers have ended before the parent; the forkserver and resource tracker end as they
    # see it gone.
    deadline = time.monotonic() + 2
    while any(map(is_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [command_line(pid) for pid in workers if is_alive(pid)] == []
    assert os.listdir(tmp_path / "rejects") == []


def worker_pids(parent: int, at_least: int = 4) -> list[int]:
    """Wait for the parent's worker processes (children of its forkserver) and return them,
    with the forkserver and the resource tracker."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [pid for pid in descendants(parent) if pid != parent]
        if len(found) >= at_least:  # by default the forkserver, the tracker and two workers
            return found
        time.sleep(0.05)
    raise AssertionError("the workers did not start")


def communicate_or_kill(child: subprocess.Popen) -> tuple[str, str]:
    """Return the child's output once it has ended; if it hangs, kill its group (workers too,
    since they ignore the stop signals) so that it does not outlive the test, and fail."""
    try:
        return child.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise


def wait_until_reading(processes: list[int], folder: Path) -> None:
    """Wait until one of the processes has a file in folder open."""
    deadline = time.monotonic() + 10
    while not any(has_open_file(pid, folder) for pid in processes):
        assert time.monotonic() < deadline, "no worker opened a file"
        time.sleep(0.02)


def has_open_file(pid: int, folder: Path) -> bool:
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for descriptor in descriptors:
        try:
            if os.readlink(f"/proc/{pid}/fd/{descriptor}").startswith(str(folder)):
                return True
        except OSError:
            pass
    return False


def command_line(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as file:
        return file.read().replace(b"\0", b" ").decode()


def is_alive(pid: int) -> bool:
    """Whether the process exists and has not ended (a zombie waits only to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def descendants(pid: int) -> list[int]:
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as file:
            children += [int(child) for child in file.read().split()]
    return children + [grandchild for child in children for grandchild in descendants(child)]


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_workers_must_be_a_whole_number_or_auto(value):
    done = subprocess.run([sys.executable, PROCESSOR, "--workers", value, "x.csv"],
                          capture_output=True, text=True, timeout=30)

    assert done.returncode == 2
    assert "--workers" in done.stderr


def test_auto_is_one_worker_a_core():
    assert processor.worker_count("auto") == len(os.sched_getaffinity(0))
    assert processor.worker_count("3") == 3


def test_the_watcher_sends_a_large_file_to_a_worker_and_stops_it_with_ctrl_c(tmp_path):
    root = tmp_path / "inbox"
    watcher = subprocess.Popen(
        [sys.executable, PROCESSOR, "--watch", str(root), "--poll", "0.05", "--settle", "0",
         "--delay", "0", "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        results = root / "results.jsonl"
        deadline = time.monotonic() + 20
        while not (root / "incoming").is_dir():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        big = big_file(tmp_path, "big.csv")
        os.rename(big, root / "incoming" / "big.csv")
        while not (results.exists() and results.read_text()):
            assert time.monotonic() < deadline, "the file was never processed"
            time.sleep(0.02)
    finally:
        watcher.send_signal(signal.SIGINT)
        stdout, stderr = watcher.communicate(timeout=30)

    assert watcher.returncode == 130, stderr
    assert "Traceback" not in stderr
    result = json.loads(results.read_text())
    assert result["pid"] != watcher.pid
    assert (result["status"], result["total_amount_exact"]) == ("completed", "37500.00")
    assert os.listdir(root / "done") == ["big.csv"]


def test_a_worker_stops_when_the_main_process_is_killed(tmp_path):
    path = big_file(tmp_path, "big.csv")
    child = subprocess.Popen([sys.executable, PROCESSOR, "--delay", "1", "--workers", "1",
                              "--max-concurrent", "1", path],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes = worker_pids(child.pid, at_least=3)  # the forkserver, the tracker, one worker
    wait_until_reading(processes, tmp_path)  # in its first pause of 1 s: 300 of them to go

    child.kill()  # SIGKILL: no word to anyone
    child.wait()

    deadline = time.monotonic() + 2
    while any(map(is_alive, processes)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [command_line(pid) for pid in processes if is_alive(pid)] == []


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
@pytest.mark.parametrize("processes", [1, 2, 3], ids=["tracker", "forkserver", "a-worker"])
def test_a_stop_signal_as_the_workers_start_is_neither_lost_nor_noisy(tmp_path, signal_number,
                                                                     processes):
    # Sent as soon as the first, second or third process of the start has appeared: the
    # resource tracker, the forkserver, a worker.
    paths = [big_file(tmp_path, f"big{n}.csv") for n in range(2)]
    child = subprocess.Popen(
        [sys.executable, PROCESSOR, "--delay", "0.01", "--workers", "2", *paths],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = worker_pids(child.pid, at_least=processes)

    os.killpg(child.pid, signal_number)
    stdout, stderr = communicate_or_kill(child)

    assert child.returncode == 128 + signal_number, stderr
    assert "Traceback" not in stderr and "Warning" not in stderr
    deadline = time.monotonic() + 2
    while any(map(is_alive, seen)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [command_line(pid) for pid in seen if is_alive(pid)] == []
