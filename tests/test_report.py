"""The report, the JSON and the exit status: pure functions of a batch, checked by hand."""
import json
import signal

import pytest

import processor
from processor import (file_result, exit_code, format_amount, format_json, format_report,
                       format_time_spent, plural)


@pytest.mark.parametrize("exact, shown", [
    ("1234567.5", "1,234,567.50"), ("-1234", "-1,234.00"), ("0.125", "0.125"),
    ("12345678901234567890123456789.02", "12,345,678,901,234,567,890,123,456,789.02"), ("0", "0.00"),
], ids=["cents-added", "negative-whole", "more-decimals-kept", "beyond-float", "zero"])
def test_amounts_get_thousands_separators_and_are_never_rounded(exact, shown):
    assert format_amount(exact) == shown


def a_batch() -> dict:
    completed = file_result("east.csv", "completed", seconds=1.5)
    completed.update({
        "total_transactions": 1200, "total_amount": 1234567.5, "total_amount_exact": "1234567.50",
        "average_transaction": 1028.80625, "average_transaction_exact": "1028.80625",
        "top_category": "travel",
        "date_range": {"earliest": "2024-01-02", "latest": "2024-12-30"}, "invalid_rows": 7,
        "row_errors": [{"line": n, "reason": "date is empty"} for n in range(10, 17)],
    })
    failed = file_result("west.csv", "error", error="No such file or directory", seconds=0.5)
    completed["slot"], failed["slot"] = 1, 2  # both read by this process (pid)
    return {
        "results": {"east.csv": completed, "west.csv": failed},
        "summary": {"total_files": 2, "completed_files": 1, "failed_files": 1, "cancelled_files": 0,
                    "total_transactions": 1200, "total_amount": 1234567.5,
                    "total_amount_exact": "1234567.50", "invalid_rows": 7, "elapsed": 1.0,
                    "total_processing_time": 2.0, "work_time": 0.3, "pause_time": 1.7},
    }


def test_report_has_a_row_per_file_with_its_figures():
    lines = format_report(a_batch()).splitlines()

    east = next(line for line in lines if line.startswith("east.csv"))
    assert east.split() == ["east.csv", "completed", "1,200", "7", "1,234,567.50", "1,028.81",
                            "travel", "2024-01-02", "to", "2024-12-30", "1.50"]
    west = next(line for line in lines if line.startswith("west.csv"))
    assert west.split() == ["west.csv", "error", "-", "-", "-", "-", "-", "-", "0.50"]


def test_report_lists_the_first_rejected_rows_then_how_many_more():
    report = format_report(a_batch())

    assert ("Rejected rows in east.csv (7):\n  line 10: date is empty\n  line 11: date is empty\n"
            "  line 12: date is empty\n  line 13: date is empty\n  line 14: date is empty\n"
            "  and 2 more\n") in report


def test_report_gives_each_error_with_its_reason_and_the_batch_totals():
    report = format_report(a_batch())

    assert "Errors:\n  west.csv: No such file or directory\n" in report
    assert ("Batch: 2 files (1 completed, 1 failed) | 1,200 transactions | total 1,234,567.50 | "
            "7 rows rejected") in report
    assert report.endswith(
        "Elapsed 1.00 s for 0.30 s of reading and checking rows (CPU work) and 1.70 s of "
        "simulated I/O, overlapped 2 files at a time: 2.0x faster than one file after another.")


def spent(elapsed: float, work: float, pause: float, **counts: int) -> dict:
    return {"elapsed": elapsed, "work_time": work, "pause_time": pause,
            "total_transactions": 100, "invalid_rows": 0, "cancelled_files": 0, **counts}


def test_simulated_io_overlapped_is_what_concurrency_saved():
    # 3 files x 42 pauses of 0.1 s = 12.6 s of waiting, overlapped three at a time.
    assert format_time_spent(spent(4.25, 0.03, 12.6), 3, 1) == (
        "Elapsed 4.25 s for 0.03 s of reading and checking rows (CPU work) and 12.60 s of "
        "simulated I/O, overlapped 3 files at a time: 3.0x faster than one file after another.")


def test_work_on_one_thread_with_no_pause_is_called_cpu_bound_and_workers_named():
    assert format_time_spent(spent(2.85, 2.71, 0.0), 3, 1) == (
        "Elapsed 2.85 s, 2.71 s of it reading and checking rows: CPU-bound work, which one "
        "thread does one file at a time, so running files concurrently saved nothing "
        "(--workers N reads files of 1 MiB or more on more cores).")


def test_work_spread_over_processes_is_what_they_saved():
    assert format_time_spent(spent(1.5, 2.7, 0.0), 3, 2) == (
        "Elapsed 1.50 s for 2.70 s of reading and checking rows (CPU work, in 2 processes): "
        "1.8x faster than one file after another.")


def test_processes_that_saved_nothing_are_not_called_cpu_bound_on_one_thread():
    # Three files in three processes (with --workers), on a machine that was busy.
    assert format_time_spent(spent(1.0, 0.99, 0.0), 3, 3) == (
        "Elapsed 1.00 s for 0.99 s of reading and checking rows (CPU work, in 3 processes): "
        "no faster than one file after another.")


def test_a_batch_whose_files_all_failed_claims_nothing():
    # Opening two missing files is a few microseconds of work, and no row.
    assert format_time_spent(spent(0.001, 0.0004, 0.0, total_transactions=0), 2, 1) == (
        "Elapsed 0.00 s.")


def test_a_batch_stopped_before_the_end_compares_nothing():
    # The cancelled files' work is unknown: no comparison can be made.
    assert format_time_spent(spent(0.89, 0.001, 0.0, cancelled_files=2), 3, 1) == (
        "Elapsed 0.89 s, stopped before every file was read.")


def test_one_file_at_a_time_is_not_called_cpu_bound_concurrency_that_saved_nothing():
    assert format_time_spent(spent(1.3, 1.29, 0.0), 1, 1) == (
        "Elapsed 1.30 s for 1.29 s of reading and checking rows (CPU work): no faster than one "
        "file after another.")


def test_a_batch_slower_than_its_files_claims_no_speed_up_and_no_cpu_bound():
    # Waiting to retry a file is neither work nor I/O: 0.4x "faster" would be nonsense, and
    # so would calling 2.19 s of mostly waiting CPU-bound.
    assert format_time_spent(spent(2.19, 0.92, 0.0), 2, 1) == (
        "Elapsed 2.19 s for 0.92 s of reading and checking rows (CPU work): no faster than one "
        "file after another.")


def test_report_lists_each_retried_file_with_the_error_of_each_failed_attempt():
    batch = a_batch()
    batch["results"]["east.csv"].update(
        {"attempts": 2, "earlier_errors": ["Changed while being read (size 10 -> 20 bytes)"]})
    batch["results"]["west.csv"].update(
        {"attempts": 3, "earlier_errors": ["Permission denied", "No such file or directory"]})

    report = format_report(batch)

    assert ("Retried east.csv: 2 attempts, completed\n"
            "  attempt 1: Changed while being read (size 10 -> 20 bytes)\n") in report
    assert ("Retried west.csv: 3 attempts, error\n"
            "  attempt 1: Permission denied\n"
            "  attempt 2: No such file or directory\n"
            "  attempt 3: No such file or directory\n") in report


def test_a_file_tried_once_is_not_listed_as_retried():
    assert "Retried" not in format_report(a_batch())


def test_json_carries_every_figure_unrounded():
    batch = a_batch()

    assert json.loads(format_json(batch)) == batch


def refuse(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def test_json_is_strict_a_sum_past_the_float_range_is_null_beside_its_exact_text():
    batch = a_batch()
    huge = "1" + "0" * 400
    batch["results"]["east.csv"].update({
        "total_amount": float("inf"), "total_amount_exact": huge,
        "average_transaction": float("inf"), "average_transaction_exact": "5" + "0" * 399})
    batch["summary"].update({"total_amount": float("inf"), "total_amount_exact": huge})

    parsed = json.loads(format_json(batch), parse_constant=refuse)

    east = parsed["results"]["east.csv"]
    assert (east["total_amount"], east["average_transaction"]) == (None, None)
    assert east["total_amount_exact"] == huge
    assert east["average_transaction_exact"] == "5" + "0" * 399
    assert parsed["summary"]["total_amount"] is None
    assert parsed["summary"]["total_amount_exact"] == huge


@pytest.mark.parametrize("exact, shown", [
    ("2.675", "2.68"), ("0.125", "0.12"), ("0.135", "0.14"), ("1234.5", "1,234.50"),
    ("5" + "0" * 30, f"{5 * 10**30:,}.00")],
                         ids=["float-would-say-2.67", "half-to-even-down", "half-to-even-up",
                              "separators", "beyond-float"])
def test_the_average_is_shown_from_its_exact_value_to_the_cent(exact, shown):
    batch = a_batch()
    batch["results"]["east.csv"]["average_transaction_exact"] = exact
    batch["results"]["east.csv"]["average_transaction"] = float(exact)

    east = next(line for line in format_report(batch).splitlines() if line.startswith("east.csv"))

    assert east.split()[5] == shown


@pytest.mark.parametrize("statuses, stopped_by, code", [
    (["completed", "completed"], None, 0),
    (["completed", "error"], None, 1),
    (["completed", "cancelled"], signal.SIGINT, 130),
    (["completed", "completed"], signal.SIGINT, 130),
    (["completed", "cancelled"], signal.SIGTERM, 143),
    (["completed", "error"], signal.SIGHUP, 129),
], ids=["all-completed", "one-error", "interrupted", "interrupted-after-the-last-file",
        "terminated", "hung-up-after-an-error"])
def test_exit_status(statuses, stopped_by, code):
    batch = {"results": {str(n): file_result(str(n), status) for n, status in enumerate(statuses)}}

    assert exit_code(batch, stopped_by) == code


def test_a_result_that_could_not_be_saved_makes_the_exit_status_1_unless_interrupted():
    batch = {"results": {"a": file_result("a", "completed")}}

    assert exit_code(batch, all_saved=False) == 1
    assert exit_code(batch, signal.SIGINT, all_saved=False) == 130


@pytest.mark.parametrize("count, text", [(1, "1 file"), (0, "0 files"), (1200, "1,200 files")])
def test_counts_of_files_read_as_english(count, text):
    assert plural(count, "file") == text


def long_named_batch() -> dict:
    batch = a_batch()
    east = batch["results"].pop("east.csv")
    east["filename"] = "clients/2024/northern-region/east_transactions.csv"
    batch["results"][east["filename"]] = east
    return batch


def test_without_a_width_the_table_has_every_column():
    header = format_report(long_named_batch()).splitlines()[0]

    assert header.split()[-1] == "Seconds"
    assert "Dates" in header and "Top category" in header


def test_at_80_columns_no_line_is_wider_and_the_table_says_what_it_left_out():
    lines = format_report(long_named_batch(), width=80).splitlines()

    assert max(map(len, lines)) <= 80
    assert lines[0].split() == ["File", "Status", "Valid", "Rejected", "Total", "Average"]
    # Without Dates, Seconds and Top category the other columns and their gaps take 52 of the
    # 80 columns: the name's 50 characters are cut to 28, 12 before the ... and 13 after.
    assert lines[3].split() == ["clients/2024...nsactions.csv", "completed", "1,200", "7",
                                "1,234,567.50", "1,028.81"]
    assert lines[4] == "(left out to fit 80 columns: Dates, Seconds, Top category)"
    assert lines[-5:] == [
        "Batch: 2 files (1 completed, 1 failed) | 1,200 transactions | total 1,234,567.50",
        "    7 rows rejected",
        "Elapsed 1.00 s for 0.30 s of reading and checking rows (CPU work) and 1.70 s of",
        "    simulated I/O, overlapped 2 files at a time: 2.0x faster than one file after",
        "    another."]


def test_a_short_name_keeps_more_columns_and_dates_go_first():
    lines = format_report(a_batch(), width=80).splitlines()

    assert lines[0].split("  ")[-1] == "Top category"
    assert "Dates" not in lines[0] and "Seconds" not in lines[0]
    assert lines[2].split()[:2] == ["east.csv", "completed"]
    assert max(map(len, lines)) <= 80


def test_the_average_has_as_many_decimals_as_the_total():
    batch = a_batch()
    batch["results"]["east.csv"].update({"total_amount_exact": "3.015", "total_transactions": 2,
                                         "average_transaction_exact": "1.5075"})

    east = next(line for line in format_report(batch).splitlines() if line.startswith("east.csv"))

    assert east.split()[4:6] == ["3.015", "1.508"]  # 1.5075 to three places, half to even


def test_one_transaction_is_singular():
    batch = a_batch()
    batch["summary"].update({"total_transactions": 1, "invalid_rows": 1})

    assert "| 1 transaction | total 1,234,567.50 | 1 row rejected" in format_report(batch)


def test_the_files_a_signal_stopped_are_listed_to_the_width():
    names = [f"data/file_{n:04d}.csv" for n in range(1500)]
    batch = {"results": {name: file_result(name, "cancelled") for name in names}}

    line = processor.format_interruption(batch, 80)

    assert line == ("Interrupted: not finished: data/file_0000.csv, data/file_0001.csv "
                    "and 1,498 more")


def test_pauses_of_a_batch_no_faster_than_its_files_are_not_said_to_overlap():
    # 2 files read side by side, but most of the 7.78 s went on waiting to retry a third.
    assert format_time_spent(spent(7.78, 0.02, 5.4), 2, 1) == (
        "Elapsed 7.78 s for 0.02 s of reading and checking rows (CPU work) and 5.40 s of "
        "simulated I/O: no faster than one file after another.")
