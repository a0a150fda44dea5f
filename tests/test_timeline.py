"""--timeline: the slots the coordinator records, and the chart drawn from them."""
import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import processor
from processor import Span, draw_span, format_timeline, legend_key, process_batch, tick_step

PROCESSOR = str(Path(__file__).resolve().parent.parent / "processor.py")
HEADER = "transaction_id,customer_id,amount,date,category\n"


def rows_of(count: int) -> str:
    return "".join(f"T{n},C{n},1.00,2024-01-01,dining\n" for n in range(count))


# --- Drawing the chart ---

def test_spans_are_drawn_in_their_slots_with_idle_time_as_dots_and_a_legend_for_short_ones():
    spans = [Span(1, 0.0, 1.0, "in/a.csv"), Span(1, 1.0, 2.0, "in/c.csv"),
             Span(2, 0.0, 0.4, "in/b.csv"), Span(2, 1.5, 2.0, "in/d.csv")]

    lines = format_timeline(spans, 2, 32)

    # 32 columns: "slot 1 |" takes 8 and 4 are kept at the right, so 20 columns for 2.0 s,
    # 0.1 s each. b.csv gets 4 columns and d.csv 5: too few for their names (7 + 2 brackets).
    assert lines == [
        "Timeline: 2 slots over 2.00 s, a column every 0.1 s, . where a slot sat idle",
        "slot 1 |[a.csv===][c.csv===]|",
        "slot 2 |[a=]...........[b==]|",
        "        +---------+---------+",
        "        0 s       1 s       2 s",
        "  a = in/b.csv (slot 2, 0.00 to 0.40 s)",
        "  b = in/d.csv (slot 2, 1.50 to 2.00 s)",
    ]


def test_a_slot_no_file_held_is_a_row_of_dots():
    spans = [Span(1, 0.0, 2.0, "a.csv")]

    lines = format_timeline(spans, 2, 32)

    assert lines[1:3] == ["slot 1 |[a.csv=============]|", "slot 2 |....................|"]


def test_files_with_the_same_base_name_are_labelled_with_their_whole_names():
    spans = [Span(1, 0.0, 1.0, "march/x.csv"), Span(2, 0.0, 1.0, "april/x.csv")]

    lines = format_timeline(spans, 2, 32)

    assert lines[1:3] == ["slot 1 |[march/x.csv=======]|", "slot 2 |[april/x.csv=======]|"]


def test_a_span_too_short_for_any_column_of_its_own_is_still_in_the_legend():
    # 20 columns of 0.1 s: the first span ends in the column where the second begins.
    spans = [Span(1, 0.0, 0.05, "first.csv"), Span(1, 0.05, 2.0, "second.csv")]

    lines = format_timeline(spans, 1, 32)

    assert lines[1] == "slot 1 |[second.csv========]|"
    assert lines[-1] == "  a = first.csv (slot 1, 0.00 to 0.05 s)"


def test_a_last_second_that_would_pass_the_width_is_left_out():
    spans = [Span(1, 0.0, 200.0, "a.csv")]

    lines = format_timeline(spans, 1, 32)

    # Ticks every 100 s, 10 columns apart; "200 s" would need columns 28 to 32 of 32.
    assert lines[-2:] == ["        +---------+---------+", "        0 s       100 s"]


def test_no_finished_file_at_all_says_so():
    assert format_timeline([], 3, 80) == ["Timeline: no file finished, so there is nothing to draw."]


@pytest.mark.parametrize("width, text, drawn", [
    (7, "a.csv", "[a.csv]"),
    (9, "a.csv", "[a.csv==]"),
    (6, "a.csv", "[====]"),
    (3, "a", "[a]"),
    (2, "a", "[]"),
    (1, "a", "|"),
    (0, "a", ""),
], ids=["name-just-fits", "name-and-fill", "name-too-long", "key", "two-columns", "one-column",
        "no-column"])
def test_a_span_is_as_wide_as_its_columns_with_its_text_only_if_it_fits(width, text, drawn):
    assert draw_span(width, text) == drawn


@pytest.mark.parametrize("index, key", [(0, "a"), (25, "z"), (26, "aa"), (27, "ab"),
                                        (701, "zz"), (702, "aaa")])
def test_legend_keys_run_a_to_z_then_aa(index, key):
    assert legend_key(index) == key


@pytest.mark.parametrize("duration, chart, step", [
    (2.0, 20, 1.0),  # 10 columns are 1 s
    (4.26, 68, 1.0),  # 10 columns are 0.63 s: the next of 0.1, 0.2, 0.5, 1 is 1
    (0.05, 50, 0.01),  # 10 columns are 0.01 s exactly
    (37.0, 70, 10.0),  # 10 columns are 5.3 s: 5 is too little
], ids=["exact", "rounded-up", "small", "large"])
def test_ticks_are_one_two_or_five_times_a_power_of_ten_at_least_ten_columns_apart(
        duration, chart, step):
    assert tick_step(duration, chart) == pytest.approx(step)


# --- The slots the coordinator records ---

@pytest.mark.asyncio
async def test_recorded_slots_never_hold_two_files_at_once(write_csv):
    paths = [write_csv(f"f{n}.csv", HEADER + rows_of(150 * n)) for n in range(1, 8)]

    batch = await process_batch(paths, max_concurrent=3, delay=0)

    spans = sorted(processor.span_of(result) for result in batch["results"].values())
    assert {span.slot for span in spans} == {1, 2, 3}
    for earlier, later in zip(spans, spans[1:]):
        if earlier.slot == later.slot:
            assert earlier.end <= later.start, (earlier, later)
    for span in spans:
        assert 0 <= span.start <= span.end <= batch["summary"]["elapsed"]


@pytest.mark.asyncio
async def test_a_file_takes_the_lowest_free_slot(monkeypatch):
    release = {name: asyncio.Event() for name in ["a", "b", "c", "d"]}
    started: list[str] = []

    async def waiting_for_release(filename, **options):
        started.append(filename)
        await release[filename].wait()
        return processor.file_result(filename, "completed")

    monkeypatch.setattr(processor, "process_file", waiting_for_release)
    batch = asyncio.create_task(process_batch(["a", "b", "c", "d"], max_concurrent=3, delay=0))
    while len(started) < 3:
        await asyncio.sleep(0)
    release["b"].set()  # slot 2 frees first, while 1 and 3 stay busy
    while len(started) < 4:
        await asyncio.sleep(0)
    for event in release.values():
        event.set()
    results = (await batch)["results"]

    assert {name: result["slot"] for name, result in results.items()} == {
        "a": 1, "b": 2, "c": 3, "d": 2}


@pytest.mark.asyncio
async def test_a_file_the_batch_never_started_has_no_slot(monkeypatch):
    async def never_ending(filename, **options):
        await asyncio.Event().wait()

    monkeypatch.setattr(processor, "process_file", never_ending)
    results: dict = {}
    batch = asyncio.create_task(process_batch(["a", "b"], max_concurrent=1, delay=0,
                                              results=results))
    await asyncio.sleep(0)
    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch
    summary = processor.summarize_batch(["a", "b"], results, 0.0)

    assert [(r["status"], r["slot"], r["start_offset"]) for r in summary["results"].values()] == [
        ("cancelled", None, None), ("cancelled", None, None)]


# --- The command line ---

def test_timeline_prints_after_the_report_80_columns_wide_off_a_terminal(write_csv):
    first = write_csv("first.csv", HEADER + rows_of(300))
    second = write_csv("second.csv", HEADER + rows_of(100))

    run = subprocess.run([sys.executable, PROCESSOR, "--timeline", "--delay", "0", first, second],
                         capture_output=True, text=True, timeout=60)

    assert run.returncode == 0
    report, timeline = run.stdout.split("\n\nTimeline: ")
    assert report.splitlines()[0].startswith("File ")
    rows = timeline.splitlines()[1:3]
    # 80 columns: "slot 1 |", 68 columns of chart, "|", and 3 columns left for the axis.
    assert [len(row) for row in rows] == [77, 77]
    # The larger file starts first, in slot 1, after the batch's few milliseconds of setting up.
    assert re.fullmatch(r"slot 1 \|\.*\[first\.csv=*\]\.*\|", rows[0])
    assert re.fullmatch(r"slot 2 \|\.*\[second\.csv=*\]\.*\|", rows[1])
    assert "Timeline" not in run.stderr


def test_json_gives_each_result_its_slot_and_offsets(write_csv):
    path = write_csv("a.csv", HEADER + rows_of(3))

    run = subprocess.run([sys.executable, PROCESSOR, "--json", "--delay", "0", path],
                         capture_output=True, text=True, timeout=60)

    result = json.loads(run.stdout)["results"][path]
    assert result["slot"] == 1
    assert 0 <= result["start_offset"] <= result["end_offset"]


def test_timeline_and_json_together_are_a_usage_error():
    run = subprocess.run([sys.executable, PROCESSOR, "--json", "--timeline", "x.csv"],
                         capture_output=True, text=True, timeout=60)

    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr.splitlines()[-1] == (
        "processor.py: error: argument --timeline: not allowed with argument --json")


def test_a_batch_shorter_than_a_hundredth_of_a_second_is_timed_in_ms():
    lines = processor.format_timeline([processor.Span(1, 0.0, 0.0004, "a.csv")], 1, 80)

    assert lines[0].startswith("Timeline: 1 slot over 0.4 ms, a column every ")
    assert lines[-1].split() == ["0", "ms", "0.1", "ms", "0.2", "ms", "0.3", "ms"]
