"""--retries: the backoff, what is retried, the slot left free while waiting, cancelling a wait."""
import asyncio
import os
from collections import Counter

import pytest

import processor
from processor import process_batch, retry_wait, summarize_batch

HEADER = "transaction_id,customer_id,amount,date,category\n"


def rows_of(count: int) -> str:
    return "".join(f"T{n},C{n},1.00,2024-01-01,dining\n" for n in range(count))


@pytest.fixture
def attempts(monkeypatch) -> Counter:
    """Wrap process_file to count the attempts at each file."""
    counts: Counter = Counter()
    real_process_file = processor.process_file

    async def counting(filename, **options):
        counts[filename] += 1
        return await real_process_file(filename, **options)

    monkeypatch.setattr(processor, "process_file", counting)
    return counts


# --- The waits ---

@pytest.mark.parametrize("retry, first_wait, jitter, seconds", [
    (1, 0.5, 0.0, 0.5), (2, 0.5, 0.0, 1.0), (3, 0.5, 0.0, 2.0), (6, 0.5, 0.0, 16.0),
    (7, 0.5, 0.0, 30.0),  # 32 s, capped
    (1, 0.5, 0.1, 0.55), (2, 0.5, -0.1, 0.9),  # 1.0 s less 10%
    (6, 0.5, 0.1, 17.6),  # 16 s plus 10%
    (100_000, 0.5, 0.0, 30.0),  # no overflow, however many retries
    (3, 0.0, 0.1, 0.0),
], ids=["first", "second-doubles", "third", "sixth", "capped", "jitter-up", "jitter-down",
        "jitter-below-cap", "huge-retry-number", "no-wait"])
def test_each_wait_doubles_the_last_give_or_take_the_jitter_up_to_30_seconds(
        retry, first_wait, jitter, seconds):
    assert retry_wait(retry, first_wait, jitter) == pytest.approx(seconds)


@pytest.mark.asyncio
async def test_waits_follow_the_backoff_with_a_small_random_jitter(tmp_path, monkeypatch):
    missing = str(tmp_path / "missing.csv")
    asked = []

    def recording_wait(retry, first_wait, jitter):
        asked.append((retry, first_wait, jitter))
        return 0.0

    monkeypatch.setattr(processor, "retry_wait", recording_wait)
    await process_batch([missing], delay=0, retries=3, retry_delay=0.25)

    assert [(retry, first_wait) for retry, first_wait, _ in asked] == [(1, 0.25), (2, 0.25),
                                                                       (3, 0.25)]
    assert all(-0.1 <= jitter <= 0.1 for _, _, jitter in asked)


# --- What is retried ---

@pytest.mark.asyncio
async def test_file_that_appears_while_the_batch_waits_completes_on_its_second_attempt(
        tmp_path, monkeypatch):
    late = str(tmp_path / "late.csv")
    first_attempt_failed = asyncio.Event()
    real_process_file = processor.process_file

    async def signalling(filename, **options):
        result = await real_process_file(filename, **options)
        first_attempt_failed.set()
        return result

    monkeypatch.setattr(processor, "process_file", signalling)
    batch = asyncio.create_task(process_batch([late], delay=0, retries=2, retry_delay=0.05))
    await first_attempt_failed.wait()
    with open(late, "w") as file:  # the upload lands during the wait
        file.write(HEADER + "T1,C1,12.50,2024-01-05,dining\nT2,C2,7.25,2024-02-01,fuel\n")
    result = (await batch)["results"][late]

    assert result["status"] == "completed"
    assert result["total_amount_exact"] == "19.75"  # 12.50 + 7.25
    assert result["attempts"] == 2
    assert result["earlier_errors"] == ["No such file or directory"]


@pytest.mark.asyncio
async def test_without_retries_a_missing_file_is_an_error_at_once(tmp_path, attempts):
    missing = str(tmp_path / "missing.csv")

    result = (await process_batch([missing], delay=0))["results"][missing]

    assert (result["status"], result["error"]) == ("error", "No such file or directory")
    assert (result["attempts"], result["earlier_errors"]) == (1, [])
    assert attempts[missing] == 1


@pytest.mark.asyncio
async def test_file_still_failing_after_its_retries_keeps_every_error(tmp_path, attempts):
    missing = str(tmp_path / "missing.csv")

    result = (await process_batch([missing], delay=0, retries=2, retry_delay=0))["results"][missing]

    assert (result["status"], result["error"]) == ("error", "No such file or directory")
    assert result["attempts"] == 3
    assert result["earlier_errors"] == ["No such file or directory"] * 2
    assert attempts[missing] == 3


@pytest.mark.asyncio
async def test_file_that_grows_while_read_is_read_again_whole(write_csv, change_mid_read):
    path = write_csv("uploading.csv", HEADER + rows_of(300))
    size_before = os.path.getsize(path)

    def append() -> None:  # the client is still writing while the first attempt reads
        with open(path, "a") as file:
            file.write(rows_of(50))

    change_mid_read(append)
    result = (await process_batch([path], delay=0, retries=1, retry_delay=0))["results"][path]

    assert result["status"] == "completed"
    assert result["total_transactions"] == 350  # 300 rows, then 50 more
    assert result["total_amount_exact"] == "350.00"
    assert result["attempts"] == 2
    assert result["earlier_errors"] == [
        f"Changed while being read (size {size_before:,} -> {os.path.getsize(path):,} bytes): "
        "its figures would be wrong"]


@pytest.mark.asyncio
async def test_problems_a_second_read_cannot_fix_are_not_retried(write_csv, tmp_path, attempts):
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    empty = write_csv("empty.csv", "")
    columns = write_csv("columns.csv", "transaction_id,amount\nT1,1.00\n")
    names = [str(folder), empty, columns]

    batch = await process_batch(names, delay=0, retries=2, retry_delay=0)

    for name in names:
        result = batch["results"][name]
        assert (result["status"], result["retryable"]) == ("error", False), name
        assert (result["attempts"], result["earlier_errors"]) == (1, []), name
    assert attempts == {str(folder): 1, empty: 1, columns: 1}


# --- Waiting holds no slot ---

@pytest.mark.asyncio
async def test_while_a_file_waits_to_retry_the_other_files_take_every_slot(write_csv,
                                                                          monkeypatch):
    late = write_csv("late.csv", HEADER + rows_of(300))  # the largest: it starts first
    others = [write_csv(f"{name}.csv", HEADER + rows_of(1)) for name in "abc"]
    real_process_file = processor.process_file
    calls: Counter = Counter()
    in_flight: set[str] = set()
    peak = 0
    in_flight_while_late_waits = []

    async def instrumented(filename, **options):
        nonlocal peak
        calls[filename] += 1
        in_flight.add(filename)
        peak = max(peak, len(in_flight))
        if calls[late] == 1 and filename != late:  # late failed once and has not come back
            in_flight_while_late_waits.append(len(in_flight))
        try:
            if filename == late and calls[late] == 1:  # a share that went away for a moment
                return processor.file_result(late, "error", error="Resource temporarily unavailable",
                                              retryable=True)
            await asyncio.sleep(0)  # stay in flight a moment, so that the files overlap
            return await real_process_file(filename, **options)
        finally:
            in_flight.discard(filename)

    monkeypatch.setattr(processor, "process_file", instrumented)
    batch = await process_batch([late, *others], max_concurrent=2, delay=0, retries=1,
                                retry_delay=0.01)

    assert max(in_flight_while_late_waits) == 2
    assert peak == 2
    assert batch["results"][late]["attempts"] == 2
    assert batch["results"][late]["total_transactions"] == 300
    assert [batch["results"][name]["status"] for name in others] == ["completed"] * 3


# --- Cancelling a wait ---

@pytest.mark.asyncio
async def test_cancelling_during_a_wait_ends_the_batch_at_once_with_the_file_cancelled(
        write_csv, tmp_path, monkeypatch):
    quick = write_csv("quick.csv", HEADER + rows_of(2))
    late = str(tmp_path / "late.csv")  # never arrives
    late_failed = asyncio.Event()
    real_process_file = processor.process_file

    async def signalling(filename, **options):
        result = await real_process_file(filename, **options)
        if filename == late:
            late_failed.set()
        return result

    monkeypatch.setattr(processor, "process_file", signalling)
    results: dict = {}
    batch = asyncio.create_task(process_batch([quick, late], delay=0, retries=3, retry_delay=30,
                                              results=results))
    await late_failed.wait()  # late is now asleep for about 30 s
    batch.cancel()

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(batch, timeout=5)  # a wait that ignored the cancel would time out
    assert asyncio.all_tasks() == {asyncio.current_task()}  # no task left behind
    summary = summarize_batch([quick, late], results, elapsed=0.0)
    assert summary["results"][quick]["status"] == "completed"
    assert summary["results"][late]["status"] == "cancelled"


@pytest.mark.asyncio
@pytest.mark.parametrize("settings", [{"retries": -1}, {"retry_delay": -0.5},
                                      {"retry_delay": float("nan")}],
                         ids=["negative-retries", "negative-delay", "nan-delay"])
async def test_retry_settings_out_of_range_raise_value_error(settings):
    with pytest.raises(ValueError):
        await process_batch(["a.csv"], delay=0, **settings)


@pytest.mark.asyncio
async def test_the_work_and_pauses_of_every_attempt_are_counted(monkeypatch):
    # Two attempts, each of 0.5 s of work and 0.25 s of pauses; the first may pass.
    tries = []

    async def twice(filename, **options):
        tries.append(filename)
        status, error = ("error", "changed") if len(tries) == 1 else ("completed", None)
        return processor.file_result(filename, status, seconds=0.8, work_time=0.5,
                                     pause_time=0.25, error=error, retryable=error is not None)

    monkeypatch.setattr(processor, "process_file", twice)

    batch = await process_batch(["a.csv"], delay=0, retries=1, retry_delay=0)

    result = batch["results"]["a.csv"]
    assert (result["attempts"], result["work_time"], result["pause_time"]) == (2, 1.0, 0.5)
    assert result["processing_time"] == 0.8  # the last attempt's, as before
    assert (batch["summary"]["work_time"], batch["summary"]["pause_time"]) == (1.0, 0.5)
