"""process_batch: order, totals, bounded concurrency by instrumentation, isolation and cleanup."""
import asyncio

import pytest

import processor
from processor import process_batch, summarize_batch

HEADER = "transaction_id,customer_id,amount,date,category\n"


def rows_of(count: int, amount: str = "1.00") -> str:
    return "".join(f"T{n},C{n},{amount},2024-01-01,dining\n" for n in range(count))


@pytest.fixture
def in_flight(monkeypatch) -> dict[str, int]:
    """Wrap process_file to count the files being processed at once; the peak is kept."""
    counts = {"now": 0, "peak": 0}
    real_process_file = processor.process_file

    async def counting(filename, **options):
        counts["now"] += 1
        counts["peak"] = max(counts["peak"], counts["now"])
        try:
            return await real_process_file(filename, **options)
        finally:
            counts["now"] -= 1

    monkeypatch.setattr(processor, "process_file", counting)
    return counts


def other_tasks() -> set[asyncio.Task]:
    return asyncio.all_tasks() - {asyncio.current_task()}


@pytest.mark.asyncio
async def test_results_keep_input_order_and_each_name_is_processed_once(write_csv, in_flight):
    b = write_csv("b.csv", HEADER + rows_of(1))
    a = write_csv("a.csv", HEADER + rows_of(2))

    batch = await process_batch([b, a, b], delay=0)

    assert list(batch["results"]) == [b, a]
    assert batch["summary"]["total_files"] == 2


@pytest.mark.asyncio
async def test_largest_files_start_first_and_results_keep_input_order(write_csv, tmp_path,
                                                                      monkeypatch):
    small = write_csv("small.csv", HEADER + rows_of(1))
    large = write_csv("large.csv", HEADER + rows_of(30))
    missing = str(tmp_path / "missing.csv")  # no size at all: last
    medium = write_csv("medium.csv", HEADER + rows_of(10))
    same_as_small = write_csv("same.csv", HEADER + rows_of(1))  # a tie keeps the input order
    started = []
    real_process_file = processor.process_file

    async def recording(filename, **options):
        started.append(filename)
        return await real_process_file(filename, **options)

    monkeypatch.setattr(processor, "process_file", recording)

    batch = await process_batch([small, large, missing, medium, same_as_small], max_concurrent=2,
                                delay=0)

    assert started == [large, medium, small, same_as_small, missing]
    assert list(batch["results"]) == [small, large, missing, medium, same_as_small]


@pytest.mark.asyncio
async def test_summary_adds_up_the_files_by_hand(write_csv, tmp_path):
    first = write_csv("first.csv", HEADER + "T1,C1,12.50,2024-01-01,a\nT2,C1,0.10,2024-01-01,a\n")
    second = write_csv("second.csv", HEADER + "T1,C1,0.20,2024-01-01,a\nT2,C1,oops,2024-01-01,a\n")
    missing = str(tmp_path / "missing.csv")

    batch = await process_batch([first, second, missing], delay=0)

    summary = batch["summary"]
    assert (summary["total_files"], summary["completed_files"], summary["failed_files"]) == (3, 2, 1)
    assert summary["cancelled_files"] == 0
    assert summary["total_transactions"] == 3
    assert summary["total_amount_exact"] == "12.80"  # 12.50 + 0.10 + 0.20
    assert summary["total_amount"] == 12.8
    assert summary["invalid_rows"] == 1
    assert summary["elapsed"] > 0


@pytest.mark.asyncio
async def test_the_summary_adds_up_the_files_work_and_pauses(write_csv):
    # 250 rows: two full chunks, each followed by a pause of 0.01 s; the third ends the file.
    first = write_csv("first.csv", HEADER + rows_of(250))
    second = write_csv("second.csv", HEADER + rows_of(50))  # no full chunk: no pause

    batch = await process_batch([first, second], delay=0.01)

    results, summary = batch["results"], batch["summary"]
    assert [results[name]["pause_time"] for name in (first, second)] == [0.02, 0.0]
    assert summary["pause_time"] == 0.02
    assert summary["work_time"] == results[first]["work_time"] + results[second]["work_time"]
    # Work is the thread's CPU time, within the file's wall time (two clocks: give or take).
    assert all(0 <= results[name]["work_time"] <= results[name]["processing_time"] + 0.001
               for name in (first, second))
    assert results[first]["work_time"] > 0


@pytest.mark.asyncio
async def test_the_batch_ends_as_soon_as_its_last_file_does(write_csv, monkeypatch):
    # The monitor is told of each file's result: it does not wait for its next look.
    monkeypatch.setattr(processor, "MONITOR_POLL_S", 60)
    path = write_csv("one.csv", HEADER + rows_of(3))

    batch = await asyncio.wait_for(process_batch([path], delay=0), timeout=5)

    assert batch["summary"]["completed_files"] == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("limit", [3, 1])
async def test_no_more_than_max_concurrent_files_in_flight(write_csv, in_flight, limit):
    # 300 rows: every file yields to the loop at least twice, so all free slots fill up.
    paths = [write_csv(f"f{n}.csv", HEADER + rows_of(300)) for n in range(7)]

    batch = await process_batch(paths, max_concurrent=limit, delay=0)

    assert in_flight["peak"] == limit
    assert batch["summary"]["completed_files"] == 7


@pytest.mark.asyncio
async def test_a_failing_file_does_not_change_the_others(write_csv, tmp_path):
    good = write_csv("good.csv", HEADER + rows_of(250, amount="0.30"))
    empty = write_csv("empty.csv", "")

    batch = await process_batch([str(tmp_path / "missing.csv"), empty, good, str(tmp_path)], delay=0)

    result = batch["results"][good]
    assert result["status"] == "completed"
    assert (result["total_transactions"], result["total_amount_exact"]) == (250, "75.00")  # 250 * 0.30
    assert [r["status"] for r in batch["results"].values()] == ["error", "error", "completed", "error"]


@pytest.mark.asyncio
async def test_an_unexpected_exception_in_one_file_becomes_its_error(write_csv, monkeypatch):
    good = write_csv("good.csv", HEADER + rows_of(2))
    cursed = write_csv("cursed.csv", HEADER + rows_of(2))
    real_process_file = processor.process_file

    async def buggy(filename, **options):
        if filename == cursed:
            raise RuntimeError("boom")
        return await real_process_file(filename, **options)

    monkeypatch.setattr(processor, "process_file", buggy)

    batch = await process_batch([cursed, good], delay=0)

    assert batch["results"][cursed]["status"] == "error"
    assert "RuntimeError: boom" in batch["results"][cursed]["error"]
    assert batch["results"][good]["total_transactions"] == 2


@pytest.mark.asyncio
async def test_max_concurrent_below_one_is_refused():
    with pytest.raises(ValueError):
        await process_batch(["a.csv"], max_concurrent=0)


# --- Cleanup ---

@pytest.mark.asyncio
async def test_no_task_is_left_after_a_normal_batch(write_csv, fake_terminal):
    terminal = fake_terminal()
    path = write_csv("a.csv", HEADER + rows_of(250))

    await process_batch([path], delay=0)

    assert other_tasks() == set()
    assert f"Processed 1 of 1 files (100%) | finished: {path}\n" in terminal.getvalue()
    assert terminal.visible_line().strip() == ""


@pytest.mark.asyncio
async def test_no_task_is_left_after_a_batch_with_an_error_file(write_csv, tmp_path):
    path = write_csv("a.csv", HEADER + rows_of(1))

    batch = await process_batch([path, str(tmp_path / "gone.csv")], delay=0)

    assert other_tasks() == set()
    assert batch["summary"]["failed_files"] == 1


@pytest.mark.asyncio
async def test_cancelled_batch_keeps_finished_results_and_leaves_nothing_running(
        write_csv, monkeypatch, fake_terminal):
    terminal = fake_terminal()
    quick = write_csv("quick.csv", HEADER + rows_of(1))
    stuck = write_csv("stuck.csv", HEADER + rows_of(1))
    stuck_started = asyncio.Event()
    real_process_file = processor.process_file

    async def never_ending(filename, **options):
        if filename == stuck:
            stuck_started.set()
            await asyncio.Event().wait()
        return await real_process_file(filename, **options)

    monkeypatch.setattr(processor, "process_file", never_ending)
    results: dict = {}
    batch = asyncio.create_task(process_batch([quick, stuck], delay=0, results=results))
    await stuck_started.wait()
    while quick not in results:
        await asyncio.sleep(0)

    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch

    assert other_tasks() == set()
    assert list(results) == [quick]
    assert "Processing 2 files" in terminal.getvalue()
    assert terminal.visible_line().strip() == ""
    statuses = {name: r["status"] for name, r in summarize_batch([quick, stuck], results, 1.0)["results"].items()}
    assert statuses == {quick: "completed", stuck: "cancelled"}
