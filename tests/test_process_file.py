"""process_file on real files: statistics by hand, file-level errors, line numbers, batches, yielding."""
import asyncio
import csv
import gzip
import io
import os
import signal
from datetime import date, timedelta

import pytest

import processor
from processor import process_file

HEADER = "transaction_id,customer_id,amount,date,category\n"
RESULT_KEYS = {"filename", "status", "total_transactions", "total_amount", "average_transaction",
               "top_category", "date_range", "processing_time", "invalid_rows", "row_errors", "error"}


def without_times(result: dict) -> dict:
    """Return the result with the keys that time it, which differ from run to run, set to 0."""
    return {**result, "processing_time": 0, "work_time": 0}


def rows_of(count: int, amount: str = "1.00", day: str = "2024-01-01") -> str:
    return "".join(f"T{n},C{n},{amount},{day},dining\n" for n in range(count))


# --- Statistics ---

@pytest.mark.asyncio
async def test_small_file_statistics_match_the_hand_computed_figures(write_csv):
    path = write_csv("small.csv", HEADER
                     + "T1,C1,12.50,2024-03-05,dining\n"
                     + "T2,C2,7.25,2024-01-20,groceries\n"
                     + "T3,C1,0.25,2024-03-01,dining\n"
                     + "T4,C3,-5.00,2024-02-10,groceries\n"
                     + "T5,C4,4.00,2024-02-11,fuel\n")

    result = await process_file(path, delay=0)

    assert RESULT_KEYS <= set(result)
    assert result["filename"] == path
    assert result["status"] == "completed"
    assert result["total_transactions"] == 5
    assert result["total_amount"] == 19.0  # 12.50 + 7.25 + 0.25 - 5.00 + 4.00
    assert result["total_amount_exact"] == "19.00"
    assert result["average_transaction"] == 3.8  # 19.00 / 5
    assert result["top_category"] == "dining"  # dining 2, groceries 2: tie to the smaller name
    assert result["date_range"] == {"earliest": "2024-01-20", "latest": "2024-03-05"}
    assert (result["invalid_rows"], result["row_errors"], result["error"]) == (0, [], None)
    assert (result["retryable"], result["attempts"], result["earlier_errors"]) == (False, 1, [])
    assert (result["slot"], result["start_offset"], result["end_offset"]) == (None, None, None)
    assert isinstance(result["processing_time"], float) and result["processing_time"] >= 0


@pytest.mark.asyncio
async def test_ten_thousand_dimes_total_exactly_one_thousand(write_csv):
    # Summed as floats these would come to 1000.0000000001588.
    path = write_csv("dimes.csv", HEADER + rows_of(10_000, amount="0.10"))

    result = await process_file(path, delay=0)

    assert result["total_amount"] == 1000.0
    assert result["total_amount_exact"] == "1000.00"
    assert result["average_transaction"] == 0.1


@pytest.mark.asyncio
async def test_sums_beyond_28_significant_digits_are_not_rounded(write_csv):
    path = write_csv("huge.csv", HEADER
                     + "T1,C1,12345678901234567890123456789.01,2024-01-01,travel\n"
                     + "T2,C1,0.01,2024-01-02,travel\n")

    result = await process_file(path, delay=0)

    assert result["total_amount_exact"] == "12345678901234567890123456789.02"
    assert result["total_amount"] == float("12345678901234567890123456789.02")


@pytest.mark.asyncio
async def test_average_is_the_exact_quotient_rounded_once(write_csv):
    path = write_csv("thirds.csv", HEADER + "T1,C1,1,2024-01-01,a\nT2,C1,1,2024-01-01,a\n"
                     + "T3,C1,2,2024-01-01,a\n")

    result = await process_file(path, delay=0)

    assert result["average_transaction"] == 4 / 3
    assert result["average_transaction_exact"] == "1." + "3" * 20  # 4 / 3, to 20 places


@pytest.mark.asyncio
async def test_header_is_matched_in_any_order_and_case_with_extra_columns(write_csv):
    path = write_csv("shuffled.csv", " Category ,AMOUNT,note,Date,customer_ID,Transaction_Id\n"
                     "dining,2.50,first visit,2024-06-01,C1,T1\n"
                     "fuel,40.00,,2024-06-03,C2,T2\n")

    result = await process_file(path, delay=0)

    assert (result["status"], result["total_transactions"]) == ("completed", 2)
    assert result["total_amount_exact"] == "42.50"
    assert result["date_range"] == {"earliest": "2024-06-01", "latest": "2024-06-03"}


@pytest.mark.asyncio
async def test_byte_order_mark_before_the_header_is_ignored(write_csv):
    path = write_csv("bom.csv", b"\xef\xbb\xbf" + (HEADER + rows_of(2)).encode())

    result = await process_file(path, delay=0)

    assert (result["status"], result["total_transactions"]) == ("completed", 2)


@pytest.mark.asyncio
async def test_categories_are_compared_exactly_after_stripping(write_csv):
    path = write_csv("case.csv", HEADER + "T1,C1,1,2024-01-01,Dining\n"
                     + "T2,C1,1,2024-01-01, dining\nT3,C1,1,2024-01-01,dining \n")

    result = await process_file(path, delay=0)

    assert result["top_category"] == "dining"


@pytest.mark.asyncio
async def test_file_with_a_header_and_no_rows_completes_with_empty_statistics(write_csv):
    path = write_csv("header-only.csv", HEADER)

    result = await process_file(path, delay=0)

    assert result["status"] == "completed"
    assert (result["total_transactions"], result["total_amount"], result["average_transaction"]) == (0, 0.0, 0.0)
    assert result["top_category"] is None
    assert result["date_range"] == {"earliest": None, "latest": None}


# --- File-level errors ---

def assert_error_result(result: dict, path: str, reason_part: str, *, retryable: bool) -> None:
    assert RESULT_KEYS <= set(result)
    assert result["filename"] == path
    assert result["status"] == "error"
    assert reason_part in result["error"]
    assert result["retryable"] is retryable
    assert (result["attempts"], result["earlier_errors"]) == (1, [])
    assert "\n" not in result["error"]
    assert (result["total_transactions"], result["total_amount"], result["average_transaction"]) == (0, 0.0, 0.0)
    assert result["top_category"] is None
    assert result["date_range"] == {"earliest": None, "latest": None}
    assert (result["invalid_rows"], result["row_errors"]) == (0, [])


@pytest.mark.asyncio
async def test_missing_file_is_an_error(tmp_path):
    path = str(tmp_path / "nowhere.csv")

    assert_error_result(await process_file(path, delay=0), path, "No such file", retryable=True)


@pytest.mark.asyncio
async def test_directory_is_an_error(tmp_path):
    assert_error_result(await process_file(str(tmp_path), delay=0), str(tmp_path), "directory",
                        retryable=False)


@pytest.mark.asyncio
async def test_fifo_is_an_error_at_once_never_a_hang(tmp_path):
    fifo = str(tmp_path / "pipe.csv")
    os.mkfifo(fifo)

    def hung(*_):
        raise TimeoutError("process_file blocked on a FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(5)
    try:
        result = await process_file(fifo, delay=0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)

    assert_error_result(result, fifo, "regular file", retryable=False)


@pytest.mark.asyncio
async def test_unreadable_file_is_an_error(write_csv, monkeypatch):
    path = write_csv("locked.csv", HEADER + rows_of(1))

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", path)

    # chmod would not stop the root user the tests may run as; refusing open is what counts.
    monkeypatch.setattr(processor, "open", denied, raising=False)

    assert_error_result(await process_file(path, delay=0), path, "Permission denied",
                        retryable=True)


@pytest.mark.asyncio
async def test_read_failing_mid_file_is_an_error_without_partial_figures(write_csv, monkeypatch):
    path = write_csv("flaky.csv", HEADER + rows_of(300))

    calls = []
    real_fold_chunk = processor.ChunkReader.fold_chunk

    def failing_fold_chunk(reader, tally):
        calls.append(len(calls) + 1)
        if len(calls) == 2:  # the first 100 rows are already in the tally
            raise OSError(5, "Input/output error")
        return real_fold_chunk(reader, tally)

    monkeypatch.setattr(processor.ChunkReader, "fold_chunk", failing_fold_chunk)

    assert_error_result(await process_file(path, delay=0), path, "Input/output error",
                        retryable=True)


@pytest.mark.asyncio
@pytest.mark.parametrize("content", [b"", b"\n\n  \n,,,,\r\n", b"\xef\xbb\xbf"],
                         ids=["zero-bytes", "only-blank-lines", "only-bom"])
async def test_file_without_a_header_row_is_an_error(write_csv, content):
    path = write_csv("empty.csv", content)

    assert_error_result(await process_file(path, delay=0), path, "Empty file", retryable=False)


@pytest.mark.asyncio
async def test_header_missing_columns_is_an_error_naming_them(write_csv):
    path = write_csv("columns.csv", "transaction_id,customer,amount,day,category\nT1,C1,1,2024-01-01,x\n")

    assert_error_result(await process_file(path, delay=0), path, "customer_id, date",
                        retryable=False)


@pytest.mark.asyncio
async def test_undecodable_header_is_an_error(write_csv):
    path = write_csv("latin1.csv", b"transaction_id,customer_id,amount,date,cat\xe9gorie\n")

    assert_error_result(await process_file(path, delay=0), path, "UTF-8", retryable=False)


@pytest.mark.asyncio
async def test_file_that_grows_while_read_is_an_error_that_may_pass(write_csv, change_mid_read):
    path = write_csv("uploading.csv", HEADER + rows_of(300))
    size_before = os.path.getsize(path)

    def append() -> None:
        with open(path, "a") as file:
            file.write(rows_of(50))

    change_mid_read(append)
    result = await process_file(path, delay=0)

    assert_error_result(result, path, "Changed while being read", retryable=True)
    assert f"(size {size_before:,} -> {os.path.getsize(path):,} bytes)" in result["error"]


@pytest.mark.asyncio
async def test_file_rewritten_at_the_same_size_while_read_is_an_error(write_csv,
                                                                       change_mid_read):
    path = write_csv("rewritten.csv", HEADER + rows_of(300))
    modified = os.stat(path).st_mtime_ns

    change_mid_read(lambda: os.utime(path, ns=(modified, modified + 10**9)))
    result = await process_file(path, delay=0)

    assert_error_result(result, path, "Changed while being read (modified, same size)",
                        retryable=True)


# --- Rejected rows and their line numbers ---

@pytest.mark.asyncio
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
async def test_rejected_rows_carry_the_physical_line_they_start_on(write_csv, newline):
    lines = [
        "",                                          # 1: blank lines before the header count
        HEADER.strip(),                              # 2
        "T1,C1,1.00,2024-01-01,dining",              # 3
        'T2,C2,"1,000.00",2024-01-02,dining',        # 4: rejected
        'T3,C3,2.00,2024-01-03,"home',               # 5: a quoted line break...
        'and garden"',                               # 6: ...so this record spans two lines
        "T4,,3.00,2024-01-04,dining",                # 7: rejected
    ]
    path = write_csv("lines.csv", newline.join(lines) + newline)

    result = await process_file(path, delay=0)

    assert [error["line"] for error in result["row_errors"]] == [4, 7]
    assert result["row_errors"][1]["reason"] == "customer_id is empty"
    assert result["total_transactions"] == 2
    assert result["total_amount_exact"] == "3.00"


@pytest.mark.asyncio
async def test_blank_records_are_skipped_and_counted_nowhere(write_csv):
    path = write_csv("blanks.csv", HEADER + "T1,C1,1.00,2024-01-01,a\n\n,,,,\n   \n , , ,\t, \n"
                     + "T2,C2,2.00,2024-01-02,a\n")

    result = await process_file(path, delay=0)

    assert (result["total_transactions"], result["invalid_rows"]) == (2, 0)


@pytest.mark.asyncio
async def test_valid_plus_rejected_rows_make_every_non_blank_record(write_csv):
    path = write_csv("mixed.csv", HEADER
                     + "T1,C1,1.00,2024-01-01,a\n"      # valid
                     + "T2,C2,$1.00,2024-01-01,a\n"     # amount
                     + "\n"                             # blank
                     + "T3,C3,1.00,2024-02-30,a\n"      # date
                     + "T4,C4,1.00,2024-01-01\n"        # a field short
                     + "T5,C5,1.00,2024-01-01,a,b\n"    # a field over
                     + "T6,C6,2.00,2024-01-05,b\n")     # valid

    result = await process_file(path, delay=0)

    assert (result["total_transactions"], result["invalid_rows"]) == (2, 4)
    assert [error["line"] for error in result["row_errors"]] == [3, 5, 6, 7]


@pytest.mark.asyncio
async def test_only_the_first_hundred_rejected_rows_are_listed(write_csv):
    path = write_csv("bad.csv", HEADER + rows_of(150, day="2024-02-30") + rows_of(3))

    result = await process_file(path, delay=0)

    assert (result["invalid_rows"], result["total_transactions"]) == (150, 3)
    assert len(result["row_errors"]) == 100
    assert (result["row_errors"][0]["line"], result["row_errors"][-1]["line"]) == (2, 101)


@pytest.mark.asyncio
async def test_row_with_undecodable_bytes_is_rejected_and_reading_goes_on(write_csv):
    path = write_csv("bytes.csv", HEADER.encode() + b"T1,C1,1.00,2024-01-01,caf\xe9\n"
                     + b"T2,C2,2.00,2024-01-02,dining\n")

    result = await process_file(path, delay=0)

    assert result["row_errors"] == [{"line": 2, "reason": "category: not valid UTF-8"}]
    assert (result["total_transactions"], result["total_amount_exact"]) == (1, "2.00")


@pytest.mark.asyncio
async def test_record_the_csv_reader_cannot_parse_is_rejected_and_reading_goes_on(write_csv):
    path = write_csv("giant.csv", HEADER + 'T1,C1,1.00,2024-01-01,"' + "x" * 200_000 + '"\n'
                     + "T2,C2,2.00,2024-01-02,dining\n")

    result = await process_file(path, delay=0)

    assert result["invalid_rows"] == 1
    assert result["row_errors"][0]["line"] == 2
    assert "cannot be read as CSV" in result["row_errors"][0]["reason"]
    assert (result["total_transactions"], result["total_amount_exact"]) == (1, "2.00")


@pytest.mark.asyncio
async def test_nul_byte_in_an_amount_is_rejected(write_csv):
    path = write_csv("nul.csv", HEADER + "T1,C1,1\x00.00,2024-01-01,a\n")

    result = await process_file(path, delay=0)

    assert result["invalid_rows"] == 1
    assert result["row_errors"][0]["reason"].startswith("amount")


# --- Batches: the fast path and the csv module together ---

def good(line: int, day: str = "2024-01-01", category: str = "dining", end: str = "\n") -> str:
    return f"T{line},C{line},1.00,{day},{category}{end}"


def batch_crossing_file() -> str:
    """Odd records around the 100-line batches; the comments give each one's physical line."""
    return "".join(
        [HEADER]                                                   # 1
        + [good(n) for n in range(2, 101)]                         # 2-100
        + ["T101,C1,1e3,2024-01-01,dining\n"]                      # 101: rejected
        + [good(n) for n in range(102, 301)]                       # 102-300
        + ['T301,C1,2.00,2024-01-01,"two\nlines"\n']               # 301-302: one record
        + ["T303,C1,1.00,2024-02-30,dining\n"]                     # 303: rejected
        + [good(n) for n in range(304, 403)]                       # 304-402
        + [good(n, end="\r\n") for n in range(403, 450)]           # 403-449
        + [good(450, day="2023-12-31", category=" fuel ", end="\r\n")]
        + [good(n, end="\r\n") for n in range(451, 460)]           # 451-459
        + [good(460, day="2025-01-01", end="\r\n")]
        + [good(n, end="\r\n") for n in range(461, 601)]           # 461-600
        + ["\n", ",,,,\n", good(603, end="")])                      # 601-602 blank; 603 unended


@pytest.mark.asyncio
async def test_records_around_batch_boundaries_are_each_counted_once_on_their_line(write_csv):
    path = write_csv("batches.csv", batch_crossing_file())

    result = await process_file(path, delay=0)

    assert [error["line"] for error in result["row_errors"]] == [101, 303]
    assert result["invalid_rows"] == 2
    assert result["total_transactions"] == 597  # 603 lines - header - 2 rejected - 2 blank - 1 two-line
    assert result["total_amount_exact"] == "598.00"  # 596 x 1.00 + 2.00
    assert result["date_range"] == {"earliest": "2023-12-31", "latest": "2025-01-01"}
    assert result["top_category"] == "dining"


def european(text: str) -> str:
    """Return a file as Excel writes it in much of Europe: semicolons, and decimal commas."""
    return text.replace(",", ";").replace("1.00", "1,00").replace("2.00", "2,00")


@pytest.mark.parametrize("write_as, open_input", [
    (lambda text: text, processor.open_csv),
    (european, processor.ClientFiles(decimal_comma=True).open_input),
], ids=["commas", "semicolons-and-decimal-commas"])
@pytest.mark.asyncio
async def test_the_fast_path_gives_exactly_what_the_csv_module_and_check_row_give(
        write_csv, monkeypatch, fast_path_answers, write_as, open_input):
    path = write_csv("batches.csv", write_as(batch_crossing_file()))

    with_fast_path = await process_file(path, delay=0, open_input=open_input)
    monkeypatch.setattr(processor, "fold_simple_chunk", lambda *args: None)
    without = await process_file(path, delay=0, open_input=open_input)

    # Lines 102-201 and 403-502 are the batches with nothing odd in them.
    assert fast_path_answers == [False, True, False, False, True, False, False]
    assert with_fast_path["total_amount_exact"] == "598.00"  # 596 x 1.00 + 2.00, as above
    assert [error["line"] for error in with_fast_path["row_errors"]] == [101, 303]
    assert without_times(with_fast_path) == without_times(without)


def test_remembered_dates_stop_at_a_bound_and_the_date_range_stays_right(monkeypatch):
    monkeypatch.setattr(processor, "MAX_SEEN_DATES", 150)
    days = [date(2024, 1, 1) + timedelta(days=n) for n in range(400)]
    rows = "".join(good(n, day=day.isoformat()) for n, day in enumerate(reversed(days)))
    reader = processor.ChunkReader(io.StringIO(HEADER + rows))
    tally = processor.FileTally()

    while reader.fold_chunk(tally) == processor.ROWS_PER_CHUNK:
        pass

    assert len(reader.seen_dates) == 200  # 100 after the first chunk, 200 after the second
    assert (tally.count, tally.earliest, tally.latest) == (400, "2024-01-01", "2025-02-03")


@pytest.mark.asyncio
async def test_the_csv_field_limit_holds_on_simple_lines_too(write_csv):
    path = write_csv("long.csv", HEADER + good(2) + good(3, category="a" * 200) + good(4))
    limit = csv.field_size_limit(100)
    try:
        result = await process_file(path, delay=0)
    finally:
        csv.field_size_limit(limit)

    assert result["total_transactions"] == 2
    assert result["row_errors"] == [
        {"line": 3, "reason": "cannot be read as CSV: field larger than field limit (100)"}]


# --- Blocks: the faster reader takes a file's text a block at a time ---

# Odd records, each put in a file of good ones at chunk boundaries; {n} is the record's line.
ODD_RECORDS = {
    "quoted-field": 'T{n},C1,"1.00",2024-01-01,dining\n',
    "quoted-line-end": 'T{n},C1,1.00,2024-01-01,"two\nlines"\n',
    "quoted-crlf": 'T{n},C1,1.00,2024-01-01,"two\r\nlines"\r\n',
    "quote-never-closed": 'T{n},C1,1.00,2024-01-01,"open\n',
    "quote-inside-a-field": "T{n},C1,1.00,2024-01-01,in\"side\n",
    "crlf": "T{n},C1,1.00,2024-01-01,dining\r\n",
    "bare-cr": "T{n},C1,1.00,2024-01-01,dining\r",
    "blank-line": "\n",
    "commas-only": ",,,,\n",
    "too-few-fields": "T{n},C1,1.00,2024-01-01\n",
    "too-many-fields": "T{n},C1,1.00,2024-01-01,dining,extra\n",
    "counts-making-up": "T{n},C1,1.00,2024-01-01\nT{n},C1,1.00,2024-01-01,dining,extra\n",
    "undecodable-byte": "T{n},C1,1.00,2024-01-01,caf\udce9\n",
    "padded-values": "T{n}, C1 , 1.00 ,2024-01-01, fuel \n",
    "blank-id": "  ,C1,1.00,2024-01-01,dining\n",
    "unicode-space-category": "T{n},C1,1.00,2024-01-01,\u3000\n",
    "non-ascii-category": "T{n},C1,1.00,2024-01-01,caf\u00e9\n",
    "bad-amount": "T{n},C1,1e3,2024-01-01,dining\n",
    "amount-with-comma": "T{n},C1,\"1,5\",2024-01-01,dining\n",
    "bad-date": "T{n},C1,1.00,2024-02-30,dining\n",
    "new-date": "T{n},C1,1.00,2023-12-31,dining\n",
    "nul-byte": "T{n},C1,1\x002.00,2024-01-01,dining\n",
}
ODD_LINES = (2, 100, 101, 102, 201, 250)  # around the chunks' first and last lines


def file_with_odd_records(odd: str, *, last_line_ended: bool = True) -> str:
    """Return a file of good rows with the odd record at each of ODD_LINES (as its first line)."""
    parts, line = [HEADER], 2
    while line < 260:
        parts.append(odd.format(n=line) if line in ODD_LINES else good(line))
        line += parts[-1].count("\n") or 1
    text = "".join(parts)
    return text if last_line_ended else text.rstrip("\r\n")


def written_as(text: str, how: str) -> bytes:
    """Return a file's bytes, written as a client might have written it."""
    data = text.encode("utf-8", "surrogateescape")
    if how == "gzip":
        return gzip.compress(data)
    if how == "utf-16":
        return text.replace("\udce9", "?").encode("utf-16")
    if how == "semicolons":
        return european(text).encode("utf-8", "surrogateescape")
    return data


async def block_and_row_results(path: str, open_input, monkeypatch, block_characters: int):
    """Return process_file's result and the rows rejected, read in blocks of block_characters,
    and then read by the row-by-row path alone."""
    runs = []
    for block_reader in (True, False):
        rejected: list = []
        with monkeypatch.context() as patch:
            patch.setattr(processor, "BLOCK_CHARACTERS", block_characters)
            if not block_reader:
                patch.setattr(processor, "fold_simple_chunk", lambda *args: None)
            result = await process_file(path, delay=0, open_input=open_input,
                                        on_rejected=lambda names, rows: rejected.extend(rows))
        runs.append((without_times(result), rejected))
    return runs


CLIENT_FILES = processor.ClientFiles().open_input
READERS = {
    "lesson": ("plain", processor.open_csv),
    "client-files": ("plain", CLIENT_FILES),
    "gzip": ("gzip", CLIENT_FILES),
    "utf-16": ("utf-16", CLIENT_FILES),
    "semicolons-and-decimal-commas": ("semicolons",
                                      processor.ClientFiles(decimal_comma=True).open_input),
}


@pytest.mark.parametrize("reader", READERS.values(), ids=READERS.keys())
@pytest.mark.parametrize("odd", ODD_RECORDS.values(), ids=ODD_RECORDS.keys())
@pytest.mark.asyncio
async def test_the_block_reader_gives_exactly_what_the_row_by_row_path_gives(
        write_csv, monkeypatch, odd, reader):
    how, open_input = reader
    name = "odd.csv.gz" if how == "gzip" else "odd.csv"
    for last_line_ended in (True, False):
        text = file_with_odd_records(odd, last_line_ended=last_line_ended)
        path = write_csv(name, written_as(text, how))
        # Small blocks end anywhere: inside a line, a record, a chunk, between \r and \n.
        for block_characters in (1, 83, 1000, processor.BLOCK_CHARACTERS):
            in_blocks, row_by_row = await block_and_row_results(path, open_input, monkeypatch,
                                                                block_characters)

            assert in_blocks == row_by_row, (last_line_ended, block_characters)


@pytest.mark.asyncio
async def test_lines_read_for_a_header_whose_quotes_run_on_are_read_before_the_blocks(
        write_csv, monkeypatch):
    # The quote in the last name makes the header's lines run on to line 150, the next with one.
    rows = [good(n).replace("\n", ",x\n") for n in range(2, 260)]
    rows[150 - 2] = rows[150 - 2].replace(",x", ',x"')
    path = write_csv("header.csv", HEADER.replace("\n", ',no"te\n') + "".join(rows))

    in_blocks, row_by_row = await block_and_row_results(path, CLIENT_FILES, monkeypatch, 83)

    assert in_blocks == row_by_row
    assert in_blocks[0]["total_transactions"] == 258  # lines 2-259


@pytest.mark.asyncio
async def test_fields_longer_than_the_csv_limit_are_found_in_blocks_longer_than_it(
        write_csv, monkeypatch):
    text = file_with_odd_records("T{n},C1,1.00,2024-01-01," + "a" * 150 + "\n")
    path = write_csv("long.csv", text)
    limit = csv.field_size_limit(100)
    try:
        in_blocks, row_by_row = await block_and_row_results(path, processor.open_csv, monkeypatch,
                                                            processor.BLOCK_CHARACTERS)
    finally:
        csv.field_size_limit(limit)

    assert in_blocks == row_by_row
    assert in_blocks[0]["invalid_rows"] == len(ODD_LINES)


def test_each_chunk_folded_from_blocks_is_a_whole_chunk_until_the_end(monkeypatch):
    monkeypatch.setattr(processor, "BLOCK_CHARACTERS", 64)  # less than two lines at a time
    text = io.StringIO(HEADER + rows_of(250))
    reader = processor.ChunkReader(text, read_block=text.read)
    tally = processor.FileTally()

    folded = [reader.fold_chunk(tally) for _ in range(4)]

    assert folded == [100, 100, 50, 0]
    assert (tally.count, reader.lines_read) == (250, 251)


@pytest.mark.parametrize("end", ["\n", "\r\n"], ids=["lf", "crlf"])
@pytest.mark.asyncio
async def test_a_file_of_simple_lines_is_read_in_blocks_not_a_line_at_a_time(write_csv,
                                                                            monkeypatch, end):
    path = write_csv("simple.csv", (HEADER + rows_of(250)).replace("\n", end))
    chunks_of_lines: list = []
    monkeypatch.setattr(processor, "check_simple_lines",
                        lambda *args: chunks_of_lines.append(args))

    result = await process_file(path, delay=0)

    assert result["total_transactions"] == 250
    assert chunks_of_lines == []


# --- Yielding to the event loop ---

@pytest.mark.asyncio
@pytest.mark.parametrize("delay", [0, 0.25])
async def test_it_sleeps_for_delay_after_every_hundred_rows(write_csv, monkeypatch, delay):
    path = write_csv("yield.csv", HEADER + rows_of(250))
    pauses = []
    real_sleep = asyncio.sleep

    async def recording_sleep(seconds):
        pauses.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)

    await process_file(path, delay=delay)

    assert pauses == [delay, delay]


@pytest.mark.asyncio
async def test_amounts_beyond_the_float_range_stay_exact_and_convert_to_infinity(write_csv):
    huge = "9" * 400
    path = write_csv("astronomical.csv", HEADER + f"T1,C1,{huge},2024-01-01,a\nT2,C1,1,2024-01-01,a\n")

    result = await process_file(path, delay=0)

    assert result["status"] == "completed"
    assert result["total_amount_exact"] == "1" + "0" * 400  # 999...9 + 1
    assert result["total_amount"] == float("inf")
    assert result["average_transaction"] == float("inf")
    assert result["average_transaction_exact"] == "5" + "0" * 399  # 10**400 / 2
