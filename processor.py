"""Process a batch of transaction CSV files concurrently and report their statistics.

Usage: python processor.py [options] FILE_OR_DIR ...    (python processor.py --help for the options)
       python processor.py [options] --watch DIR        (run until Ctrl-C on what arrives in DIR)
       python processor.py [options] --watch DIR --serve [HOST:]PORT    (and show it over HTTP)

Up to three files are read at a time (asyncio, one thread); a spinner and a progress line
keep the user company on stderr, and the report goes to stdout:

    $ python processor.py sample_data/*.csv
    Processing 6 files, up to 3 at a time (Ctrl-C to stop)
    Processed 3 of 6 files (50%) | finished: sample_data/transactions_004.csv, ... | about 1 s left
    ...
    File                              Status     Valid  Rejected       Total  Average  Top category ...
    sample_data/transactions_001.csv  completed    600         8  152,000.90   253.33  groceries ...
    ...
    Batch: 6 files (6 completed, 0 failed) | 12,600 transactions | total 2,839,991.82 | 8 rows rejected

Sections, in reading order, each under a `# --- Name ---` comment. The core, through the report,
is the whole lesson; the extras after it plug in through parameters the core offers (the one
call the core makes forward is to the faster reader).
    The data model     what one file's result holds, and the small values behind it
    Checking rows      pure functions: is the header usable, is a row valid, and why not
    Tallying a file    folding valid rows into exact totals; the one function that builds a result
    Processing a file  process_file: read, check and tally a file 100 rows at a time, yielding,
                       and counting its own work apart from its waiting
    The spinner        show_spinner, and the one stderr line it shares with the monitor
    The monitor        monitor_progress: a progress line every 2 seconds, and at the end
    The coordinator    process_batch: the settings, a slot under the semaphore, retries that
                       hold no slot, gather, and the spinner and monitor cancelled in finally
    The report         the human report, its last line telling what concurrency saved (the
                       files' work and waiting, measured), the JSON, and the exit status
    Reading faster     a file read in blocks of text, simple lines split and checked a block
                       at once: four and a half times faster
    Client files       the opener the command line uses: other encodings (a byte-order mark
                       decides), a delimiter found in the header, decimal commas, .gz, and
                       stdin, read ahead by a thread so that a slow pipe is waited for at an await
    Using more cores   --workers: a reader that sends large files to worker processes and
                       awaits them, so that their work runs on other cores
    Saving to SQLite   --db: a writer thread, fed through a queue, saves each file's result
    Keeping rejects    --rejects: a reader around process_file that keeps every rejected row
                       in a temporary file, named for good only once its input was read whole
    The dashboard      --dashboard: a view in place of the spinner and the monitor; a pure
                       function lays out the lines, a task draws them with curses
    The timeline       --timeline: after the report, a chart of which file held which slot, when
    Watching a folder  --watch: a service that takes each file as it arrives, only once it is
                       complete, and records its result before moving it on, crash or not
    An HTTP server     what --serve needs of HTTP/1.1, on asyncio.start_server: a task for each
                       connection, a limit on all a client could abuse, event streams, and a
                       shutdown that ends each connection's task itself
    Serving a watch    --serve: the watcher's live page, JSON, events and uploads, from a view
                       beside its status line that hears of it through the watcher's hooks
    The command line   parsing arguments, and main, which plugs in the extras asked for;
                       stopping: SIGINT, SIGTERM and SIGHUP, at any moment, as Ctrl-C
"""

import os
import signal
import sys

if __name__ == "__main__":
    # Importing the modules below takes a moment. A signal in it, before main can handle it (see
    # "Stopping" in the command line's section), ends the program at once, quietly, with the
    # status a shell gives a program that a signal stopped: os._exit, since an exception raised
    # in the midst of an import can be turned into another, or swallowed. Nothing is written
    # yet, so nothing is lost. A signal ignored from the start (SIGHUP under nohup, SIGINT in a
    # background job) stays ignored.
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, lambda signum, frame: os._exit(128 + signum))

import argparse
import asyncio
import codecs
import csv
import errno
import functools
import io
import itertools
import json
import math
import queue
import random
import re
import stat
import textwrap
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from contextlib import (AbstractAsyncContextManager, asynccontextmanager, closing, contextmanager,
                        suppress)
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from decimal import Context, Decimal, MAX_EMAX, MAX_PREC, MIN_EMIN, InvalidOperation, localcontext
from fractions import Fraction
from typing import (TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Collection, Coroutine,
                    Iterable, Iterator, Literal, Mapping, NamedTuple, ParamSpec, TextIO, TypedDict,
                    TypeVar)

if TYPE_CHECKING:
    # For the type hints of later sections: each is imported where an option or a kind of
    # file uses it, so that a run without it does not pay for it.
    import ctypes
    import curses
    import gzip
    import socket
    import sqlite3
    from concurrent.futures import ProcessPoolExecutor
    from types import FrameType

    from _typeshed import WriteableBuffer

REQUIRED_COLUMNS = ("transaction_id", "customer_id", "amount", "date", "category")
ROWS_PER_CHUNK = 100  # records (lines, in a simple file) folded between two yields to the loop
MAX_ROW_ERRORS = 100
SPINNER_FRAMES = "\\|/-"
SPINNER_INTERVAL_S = 0.1
MONITOR_INTERVAL_S = 2.0
MONITOR_POLL_S = 0.1
UNKNOWN_WIDTH = 80  # what a drawing (the timeline) may use when it goes to a file or a pipe
# Off a terminal no line wraps or is redrawn, so the monitor's may be long, but not 24,000
# characters long for 1,500 files finished at once.
LOG_LINE_WIDTH = 1000
REPORT_ROW_ERRORS = 5
TABLE_COLUMNS = ("File", "Status", "Valid", "Rejected", "Total", "Average", "Top category",
                 "Dates", "Seconds")
NUMBER_COLUMNS = {"Valid", "Rejected", "Total", "Average", "Seconds"}  # aligned to the right
# At a terminal too narrow for the report's table, these are left out first, in this order.
OPTIONAL_COLUMNS = ("Dates", "Seconds", "Top category", "Average")
NAME_MIN_WIDTH = 24  # columns are left out until the file names have this much room
NAME_MIN_CUT = 12  # and they are cut no shorter than this: `sampl...1.csv` still tells them apart

EXIT_OK = 0
EXIT_FILE_ERROR = 1
EXIT_USAGE = 2
EXIT_SIGNALLED = 128  # plus the signal's number (130 for Ctrl-C), as a shell reports it

T = TypeVar("T")
P = ParamSpec("P")

# Decimal's default context keeps 28 significant digits, so a long enough sum would be rounded.
# In this one no sum of amounts can outgrow the precision, so adding is always exact.
EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
CENTS = Decimal("0.01")
AVERAGE_PLACES = 20  # decimal places an exact average keeps, beyond those of its total

PLAIN_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


# --- The data model ---

Status = Literal["completed", "error", "cancelled"]


class RowError(TypedDict):
    line: int
    reason: str


class DateRange(TypedDict):
    earliest: str | None
    latest: str | None


class FileResult(TypedDict):
    """One file's result: every key is always present (see the contract)."""
    filename: str
    status: Status  # "cancelled" for a file that a Ctrl-C stopped
    total_transactions: int
    total_amount: float
    total_amount_exact: str  # the same sum as plain decimal text, nothing rounded
    average_transaction: float
    average_transaction_exact: str  # the exact sum / count as decimal text (see exact_average)
    top_category: str | None
    date_range: DateRange
    processing_time: float
    work_time: float  # CPU seconds of its own work, reading and checking rows (in a batch, of every attempt)
    pause_time: float  # seconds of simulated I/O it slept: delay x the pauses (the same)
    invalid_rows: int
    row_errors: list[RowError]
    error: str | None
    delimiter: str | None  # what separated the columns of a completed file; None for any other
    retryable: bool  # the error may pass (missing, unreadable, changed while read): try again
    attempts: int  # more than 1 when the coordinator tried the file again
    earlier_errors: list[str]  # the error of each attempt before the last, in order
    rejects_file: str | None  # the file that kept every rejected row, when one was asked for
    pid: int  # the process that read it: this one, or with --workers maybe another
    slot: int | None  # under process_batch, the slot (1, 2, ...) its last attempt held
    start_offset: float | None  # and when it took and left that slot, in seconds from the
    end_offset: float | None  # batch's start; None for a file never processed in a batch


class BatchSummary(TypedDict):
    total_files: int
    completed_files: int
    failed_files: int
    cancelled_files: int
    total_transactions: int
    total_amount: float
    total_amount_exact: str
    invalid_rows: int
    elapsed: float
    total_processing_time: float  # the files' wall times added up, waits for a turn included
    work_time: float  # the files' work_time and pause_time added up: the batch one file after
    pause_time: float  # another would take about their sum


class BatchResult(TypedDict):
    results: dict[str, FileResult]
    summary: BatchSummary


class CsvFormat(NamedTuple):
    """How a file is written: the lesson's files are all the default, UTF-8 and commas."""
    encoding: str = "UTF-8"  # named in the reason a row with an undecodable byte is rejected
    delimiter: str = ","
    decimal_comma: bool = False  # amounts written 12,50 instead of 12.50


class Columns(NamedTuple):
    """The header's column names, where each required column sits in a row, and how the rows
    are written."""
    names: tuple[str, ...]
    positions: tuple[int, ...]  # in the order of REQUIRED_COLUMNS
    format: CsvFormat = CsvFormat()


class Transaction(NamedTuple):
    amount: Decimal
    date: str
    category: str


class RejectedRow(NamedTuple):
    line: int
    reason: str
    fields: list[str]  # as read; empty ones for a record the csv module could not read


class FileProblem(Exception):
    """A problem that stops a whole file from being processed: its result gets status "error"."""
    may_pass = False  # reading the file again would find the same problem


class EmptyFile(FileProblem):
    """The file has no header: it is empty, or holds only blank lines."""


class FileChanged(FileProblem):
    """The file changed while it was read, so its figures would be wrong; a new read may not."""
    may_pass = True


# --- Checking rows ---

def is_blank(fields: list[str]) -> bool:
    """Whether a record holds nothing but empty or whitespace fields (a blank line, `,,,,`)."""
    return all(not value.strip() for value in fields)


def is_undecodable(text: str) -> bool:
    """Whether text holds bytes that its encoding could not decode.

    Files are read with an error handler (surrogateescape, for UTF-8) that keeps each bad byte
    as a lone surrogate character; those are the only characters that cannot be encoded back to
    UTF-8.
    """
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def readable_text(text: str) -> str:
    """Return text with each byte that could not be decoded written as \\xNN: nothing lost, and
    printable anywhere that takes UTF-8."""
    # Done by hand, not by encoding with surrogateescape: that knows only the bytes from 128
    # up, and in UTF-16 a byte below 128 can be a bad one too (see escape_undecodable).
    if not is_undecodable(text):
        return text
    return "".join(f"\\x{ord(char) - 0xDC00:02x}" if "\udc00" <= char <= "\udcff" else char
                   for char in text)


def is_plain_decimal(text: str) -> bool:
    """Whether text is an amount in plain notation: `12`, `-3.00`, `.5`, `4.` (no `$`, `,` or `1e3`)."""
    return PLAIN_DECIMAL.fullmatch(text) is not None


def plain_amount(text: str, *, decimal_comma: bool) -> str | None:
    """Return an amount as plain decimal text with a point, or None if it is not one. With a
    decimal comma, `-0,5` is read as -0.5 and a point is refused: it would separate thousands."""
    if decimal_comma:
        if "." in text:
            return None
        text = text.replace(",", ".")
    return text if is_plain_decimal(text) else None


# A file holds many rows but few distinct dates, so most checks are answered from the cache.
@functools.lru_cache(maxsize=4096)
def is_calendar_date(text: str) -> bool:
    """Whether text is YYYY-MM-DD in ASCII digits and a day that exists."""
    if ISO_DATE.fullmatch(text) is None:
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def plural(count: int, noun: str) -> str:
    """Return `1 file`, `2 files`: the count and the noun, in the plural unless it is one."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def shorten(value: str, limit: int = 40) -> str:
    """Quote a field's value for an error message, cut short if it is long."""
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")


def find_columns(header: list[str], file_format: CsvFormat = CsvFormat()) -> Columns:
    """Return where each required column sits; raise FileProblem if one is missing.

    Names are matched stripped and case-insensitively; extra columns are allowed, whatever they
    hold. If a name appears twice, its first column is used.
    """
    names = tuple(name.strip() for name in header)
    positions: dict[str, int] = {}
    for index, name in enumerate(names):
        positions.setdefault(name.lower(), index)
    missing = [column for column in REQUIRED_COLUMNS if column not in positions]
    if missing:
        problem = f"Header lacks required column(s): {', '.join(missing)}"
        # Bad bytes, or the NULs of UTF-16 read as one-byte text: the names may be there, unread.
        if any(is_undecodable(name) or "\0" in name for name in names):
            problem += (f"; the header does not read as {file_format.encoding} text, so the file "
                        "may be in another encoding: try --encoding")
        raise FileProblem(problem)
    return Columns(names, tuple(positions[column] for column in REQUIRED_COLUMNS), file_format)


def amount_problem(amount: str, *, decimal_comma: bool) -> str:
    """Return why an amount that plain_amount refused is not one, with a hint where one helps."""
    if decimal_comma:
        return f"amount {shorten(amount)} is not a plain decimal number with a decimal comma"
    problem = f"amount {shorten(amount)} is not a plain decimal number"
    # Three digits after the comma may as well be thousands (1,250): no hint for those.
    if plain_amount(amount, decimal_comma=True) is not None and len(amount.partition(",")[2]) != 3:
        problem += " (written with a decimal comma? try --decimal-comma)"
    return problem


def row_problems(values: list[str], *, decimal_comma: bool) -> str:
    """Return why a row is rejected, given its required values stripped, in REQUIRED_COLUMNS order."""
    problems = [f"{name} is empty" for name, value in zip(REQUIRED_COLUMNS, values) if not value]
    _, _, amount, day, _ = values
    if amount and plain_amount(amount, decimal_comma=decimal_comma) is None:
        problems.append(amount_problem(amount, decimal_comma=decimal_comma))
    if day and not is_calendar_date(day):
        problems.append(f"date {shorten(day)} is not a real YYYY-MM-DD date")
    return "; ".join(problems)


def check_row(fields: list[str], columns: Columns) -> Transaction | str:
    """Return the row as a Transaction, or the reason it is rejected, naming the field(s)."""
    if len(fields) != len(columns.names):
        return f"has {plural(len(fields), 'field')}, the header has {len(columns.names):,}"
    if is_undecodable("".join(fields)):
        undecodable = [readable_text(columns.names[i]) or f"column {i + 1}"
                       for i, value in enumerate(fields) if is_undecodable(value)]
        return f"{', '.join(undecodable)}: not valid {columns.format.encoding}"
    values = [fields[i].strip() for i in columns.positions]
    _, _, amount, day, category = values
    decimal_comma = columns.format.decimal_comma
    plain = plain_amount(amount, decimal_comma=decimal_comma)
    if plain is not None and all(values) and is_calendar_date(day):
        return Transaction(Decimal(plain), day, category)
    return row_problems(values, decimal_comma=decimal_comma)


# --- Tallying a file ---

@dataclass
class FileTally:
    """The running statistics of one file, built up a row at a time. It touches no file: the
    rows rejected since the last take_rejected() wait in `rejected` for whoever wants them."""
    count: int = 0
    total: Decimal = Decimal(0)
    categories: Counter[str] = field(default_factory=Counter)
    earliest: str | None = None
    latest: str | None = None
    invalid_rows: int = 0
    row_errors: list[RowError] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)

    def add(self, transaction: Transaction) -> None:
        self.count += 1
        self.total = EXACT.add(self.total, transaction.amount)
        self.categories[transaction.category] += 1
        self.widen_dates(transaction.date, transaction.date)

    def add_many(self, count: int, total: Decimal, categories: list[str],
                 dates: Collection[str]) -> None:
        """Fold many valid rows at once: the same as add() on each of them."""
        self.count += count
        self.total = EXACT.add(self.total, total)
        self.categories.update(categories)
        if dates:
            self.widen_dates(min(dates), max(dates))

    def widen_dates(self, earliest: str, latest: str) -> None:
        # ISO dates sort as text, so the range needs no date arithmetic.
        if self.earliest is None or earliest < self.earliest:
            self.earliest = earliest
        if self.latest is None or latest > self.latest:
            self.latest = latest

    def reject(self, line: int, reason: str, fields: list[str]) -> None:
        self.invalid_rows += 1
        if len(self.row_errors) < MAX_ROW_ERRORS:
            self.row_errors.append({"line": line, "reason": reason})
        self.rejected.append(RejectedRow(line, reason, fields))

    def fold(self, line: int, fields: list[str], columns: Columns) -> None:
        """Count a data record as valid, rejected or (when blank) not at all."""
        checked = check_row(fields, columns)
        if isinstance(checked, Transaction):
            self.add(checked)
        elif not is_blank(fields):  # a valid row is never blank: only a refused one is asked
            self.reject(line, checked, fields)

    def take_rejected(self) -> list[RejectedRow]:
        """Return the rows rejected since the last call, and forget them."""
        rejected, self.rejected = self.rejected, []
        return rejected


def top_category(categories: Counter[str]) -> str | None:
    """Return the most frequent category; a tie goes to the smallest name, none to None."""
    return min(categories, key=lambda name: (-categories[name], name), default=None)


def exact_average(total: Decimal, count: int) -> Decimal:
    """Return total / count: exact if it ends within AVERAGE_PLACES decimals more than the total
    has, else rounded half to even there (10 / 3 is 3.33333333333333333333)."""
    places = AVERAGE_PLACES - min(0, int(total.as_tuple().exponent))
    # A Fraction divides exactly, and round() on it rounds half to even, as Decimal does.
    scaled = Decimal(round(Fraction(total) / count * 10 ** places))
    return scaled.scaleb(-places, EXACT).normalize(EXACT)


def to_float(value: Fraction) -> float:
    """Round an exact value to the nearest float; past the float range, to infinity, as Decimal does."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def file_result(filename: str, status: Status, tally: FileTally | None = None, *,
                seconds: float = 0.0, work_time: float = 0.0, pause_time: float = 0.0,
                error: str | None = None, delimiter: str | None = None,
                retryable: bool = False) -> FileResult:
    """Return a file's result, with every key: the tally's statistics, or none without a tally
    (a file that failed or never ran)."""
    tally = FileTally() if tally is None else tally
    # Fraction keeps the average exact until the one rounding into a float.
    average = to_float(Fraction(tally.total) / tally.count) if tally.count else 0.0
    average_exact = exact_average(tally.total, tally.count) if tally.count else Decimal(0)
    return {
        "filename": filename, "status": status,
        "total_transactions": tally.count, "total_amount": float(tally.total),
        "total_amount_exact": f"{tally.total:f}", "average_transaction": average,
        "average_transaction_exact": f"{average_exact:f}",
        "top_category": top_category(tally.categories),
        "date_range": {"earliest": tally.earliest, "latest": tally.latest},
        "processing_time": seconds, "work_time": work_time, "pause_time": pause_time,
        "invalid_rows": tally.invalid_rows,
        "row_errors": tally.row_errors, "error": error, "delimiter": delimiter,
        "retryable": retryable,
        "attempts": 1, "earlier_errors": [], "rejects_file": None, "pid": os.getpid(),
        "slot": None, "start_offset": None, "end_offset": None,
    }


# --- Processing a file ---

@dataclass
class FileProgress:
    """How far process_file has got in one file, for whoever watches it from another task."""
    started: float = field(default_factory=time.perf_counter)
    bytes_read: int = 0
    tally: FileTally = field(default_factory=FileTally)  # the rows so far


def ignore(*details: object) -> None:
    """The default of every hook an extra may plug in: hear of something, and do nothing."""


RejectedHook = Callable[[tuple[str, ...], list[RejectedRow]], None]  # the header's names, the rows


def check_regular_file(filename: str) -> None:
    """Raise FileProblem unless filename is a regular file, so a FIFO or device is never opened."""
    mode = os.stat(filename).st_mode
    if stat.S_ISDIR(mode):
        raise FileProblem("Is a directory")
    if not stat.S_ISREG(mode):
        raise FileProblem("Not a regular file (a FIFO, socket or device)")


def check_unchanged(before: os.stat_result, after: os.stat_result) -> None:
    """Raise FileChanged if the file's size or modification time differs between the two looks."""
    if after.st_size != before.st_size:
        change = f"size {before.st_size:,} -> {after.st_size:,} bytes"
    elif after.st_mtime_ns != before.st_mtime_ns:
        change = "modified, same size"
    else:
        return
    raise FileChanged(f"Changed while being read ({change}): its figures would be wrong")


async def always_there() -> None:
    """A file's next lines are always there: there is nothing to wait for."""


class CsvInput(NamedTuple):
    """An open file, as process_file reads it."""
    lines: Iterator[str]  # its text, each line with the ending it was written with
    format: CsvFormat
    bytes_read: Callable[[], int]  # how far into the file's bytes reading has got
    check_unchanged: Callable[[], None]  # raise FileChanged if the file changed since it was opened
    # Wait until the next chunk's lines have come: a pipe's may still be on their way.
    lines_arrived: Callable[[], Awaitable[None]] = always_there
    # Read the text that lines would give next, about as many characters as asked ("" only at
    # its end); lines then go on after it. The faster reader reads a file in blocks through it.
    # None keeps it to lines: a block of a pipe could wait for bytes still to come.
    read_block: Callable[[int], str] | None = None


# How process_file opens a file: called with its name, in an async with statement.
Opener = Callable[[str], AbstractAsyncContextManager[CsvInput]]


def input_from_descriptor(fd: int, lines: Iterator[str], file_format: CsvFormat,
                          read_block: Callable[[int], str]) -> CsvInput:
    """Return the input of a file's lines, read from its descriptor fd: progress and changes
    are told from the file's bytes."""
    before = os.fstat(fd)
    return CsvInput(lines, file_format, bytes_read=lambda: os.lseek(fd, 0, os.SEEK_CUR),
                    check_unchanged=lambda: check_unchanged(before, os.fstat(fd)),
                    read_block=read_block)


@asynccontextmanager
async def open_csv(filename: str) -> AsyncIterator[CsvInput]:
    """Open a UTF-8 file with commas between its columns: the only kind the lesson needs."""
    check_regular_file(filename)
    # The file is streamed, never read whole. A bad byte must not end the file, only its row:
    # surrogateescape keeps it as a marker that check_row finds.
    with open(filename, encoding="utf-8-sig", errors="surrogateescape", newline="") as file:
        yield input_from_descriptor(file.fileno(), iter(file), CsvFormat(), file.read)


class WorkClock:
    """Counts the CPU time a file's task spends working, as opposed to awaiting.

    On the event loop's one thread, no other task runs between two awaits of a task: what the
    thread does from one await to the next is this file's own work (here, reading and checking
    rows), and only the time spent awaiting can overlap another file's. It is counted in the
    thread's CPU time, which a core shared with other processes does not stretch."""

    def __init__(self) -> None:
        self.working = 0.0
        self.since = time.thread_time()

    async def wait(self, awaitable: Awaitable[None]) -> None:
        """Await awaitable, counting the time since the last await as work."""
        self.working += time.thread_time() - self.since
        await awaitable
        self.since = time.thread_time()

    def worked(self) -> float:
        """Return the seconds worked, counting those since the last await."""
        return self.working + time.thread_time() - self.since


class ChunkReader:
    """Reads a CSV file's header, then folds its records into a tally a chunk at a time."""

    def __init__(self, lines: Iterable[str], file_format: CsvFormat = CsvFormat(),
                 read_block: Callable[[int], str] | None = None) -> None:
        """Read up to the header, the first non-blank record; raise FileProblem if it is unusable.
        read_block, if given, reads on from where lines are (see CsvInput)."""
        self.lines = iter(lines)
        self.read_block = read_block  # for the faster reader
        self.lines_read = 0
        self.seen_dates: set[str] = set()  # dates of rows counted, for the faster reader
        self.columns = self.read_header(file_format)

    def read_header(self, file_format: CsvFormat) -> Columns:
        reader = csv.reader(self.lines, delimiter=file_format.delimiter)
        try:
            for fields in reader:
                if not is_blank(fields):
                    self.lines_read = reader.line_num
                    return find_columns(fields, file_format)
        except csv.Error as error:
            raise FileProblem(f"Header cannot be read as CSV: {error}") from None
        raise EmptyFile("Empty file: no header row")

    def fold_chunk(self, tally: FileTally) -> int:
        """Fold the next ROWS_PER_CHUNK records into tally; return how many there were."""
        # An optimisation the lesson can skip: "Reading faster", after the report, folds a chunk
        # of simple lines at once, to the same figures. To read ahead in blocks, it takes over
        # self.lines; a chunk it is unsure of it leaves in them, for the csv module.
        folded = fold_simple_chunk(self, tally)
        if folded is not None:
            return folded
        return self.fold_records(tally, self.lines)

    def fold_records(self, tally: FileTally, lines: Iterator[str]) -> int:
        """Fold up to ROWS_PER_CHUNK records read by the csv module; return how many there were.

        A record the csv module cannot parse is rejected, and reading goes on at the next line.
        """
        reader = csv.reader(lines, delimiter=self.columns.format.delimiter)
        records = 0
        while records < ROWS_PER_CHUNK:
            line = self.lines_read + reader.line_num + 1  # line_num counts the lines reader has read
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                tally.reject(line, f"cannot be read as CSV: {error}", [""] * len(self.columns.names))
            else:
                tally.fold(line, fields, columns=self.columns)
            records += 1
        self.lines_read += reader.line_num
        return records


async def process_file(
        filename: str, *, delay: float = 0.1, progress: FileProgress | None = None,
        on_rejected: RejectedHook = ignore, open_input: Opener = open_csv) -> FileResult:
    """Return one CSV file's statistics.

    Never raises for a file-level problem (missing, not a regular file, unreadable, empty,
    bad header, changed while being read): that gives status "error", a one-line reason, and
    `retryable` true when the problem may pass. Rejected rows are counted and listed with their
    line numbers; they never stop the file. Pass a new `progress` to follow the reading from
    another task (its tally is the file's), `on_rejected` to be handed the header's names and
    the rejected rows after each chunk (a FileProblem it raises makes the file an error), and
    `open_input` to open files other than open_csv's (it may raise FileProblem, too).
    """
    started = time.perf_counter()
    progress = FileProgress() if progress is None else progress
    tally = progress.tally
    clock = WorkClock()
    pauses = 0

    def result(status: Status, tally: FileTally | None = None, *, error: str | None = None,
               delimiter: str | None = None, retryable: bool = False) -> FileResult:
        return file_result(filename, status, tally, seconds=time.perf_counter() - started,
                           work_time=clock.worked(), pause_time=pauses * delay, error=error,
                           delimiter=delimiter, retryable=retryable)

    try:
        async with open_input(filename) as source:
            # Started anew: opening may have awaited a pipe's first lines, which is no work.
            clock = WorkClock()
            reader = ChunkReader(source.lines, source.format, source.read_block)
            while True:
                # A pipe's next lines may still be on their way. Waited for here, at an await,
                # they hold up only this file; a read that waited would freeze them all.
                await clock.wait(source.lines_arrived())
                if reader.fold_chunk(tally) < ROWS_PER_CHUNK:
                    break
                # Handed over chunk by chunk, rejected rows never fill the memory.
                on_rejected(reader.columns.names, tally.take_rejected())
                progress.bytes_read = source.bytes_read()
                # Tasks only take turns at an await. Without this one a long file would
                # freeze the spinner, the monitor, the other files and Ctrl-C until its end.
                await clock.wait(asyncio.sleep(delay))
                pauses += 1
            on_rejected(reader.columns.names, tally.take_rejected())
            # A client may still be writing the file: if it changed, the rows read are a mix.
            source.check_unchanged()
    except OSError as error:
        # Missing or unreadable now need not be for good: an upload ends, a permission is fixed.
        return result("error", error=error.strerror or str(error), retryable=True)
    except FileProblem as problem:
        return result("error", error=str(problem), retryable=problem.may_pass)
    return result("completed", tally, delimiter=reader.columns.format.delimiter)


# --- The spinner ---

def terminal_width(stream: TextIO) -> int | None:
    """Return the width the user gave in COLUMNS, else that of the terminal stream writes to;
    None for neither (a file, a pipe)."""
    given = os.environ.get("COLUMNS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    try:
        columns = os.get_terminal_size(stream.fileno()).columns if stream.isatty() else 0
    except (OSError, ValueError):  # no file descriptor (a test's capture), or no size
        columns = 0
    return columns or None  # a terminal may say 0 when it does not know its size


def cut(text: str, width: int) -> str:
    """Return text, ended with ... if it is wider than width."""
    return text if len(text) <= width else text[:max(width - 3, 0)] + "..."[:width]


class StatusLine:
    """The line of stderr that the spinner redraws in place; anyone else clears it before printing."""

    def __init__(self) -> None:
        self.width = 0

    def draw(self, text: str) -> None:
        # A line wider than the terminal would wrap, and each redraw would scroll a copy up;
        # the last column is left free, where some terminals wrap at once.
        width = terminal_width(sys.stderr)
        text = text if width is None else cut(text, width - 1)
        self.write("\r" + text)
        self.width = len(text)

    def clear(self) -> None:
        if self.width:
            self.write("\r" + " " * self.width + "\r")
            self.width = 0

    def print(self, text: str) -> None:
        """Write a whole line to stderr without garbling the spinner's line."""
        self.clear()
        self.write(text + "\n")

    def write(self, text: str) -> None:
        # Progress only keeps the user company. Once no one reads stderr (a closed pipe, a
        # terminal gone) it goes unsaid, and the files and the report on stdout go on.
        with suppress(OSError):
            sys.stderr.write(text)
            sys.stderr.flush()


status_line = StatusLine()


async def spin(describe: Callable[[], str]) -> None:
    """Draw a spinner frame and describe()'s text on stderr every 0.1 s until cancelled, then
    erase the line."""
    try:
        for frame in itertools.cycle(SPINNER_FRAMES):
            status_line.draw(f"{frame} {describe()}")
            await asyncio.sleep(SPINNER_INTERVAL_S)
    finally:
        # The cancel arrives at the sleep above; erasing here leaves a clean line even after Ctrl-C.
        status_line.clear()


async def show_spinner(message: str) -> None:
    """Spin `\\ | / -` before message on stderr until cancelled, then erase the line.

    Off a terminal (a log, a pipe) it draws nothing at all and just waits to be cancelled.
    """
    if not sys.stderr.isatty():
        await asyncio.Event().wait()  # never set: only the cancel ends this wait
    await spin(lambda: message)


# --- The monitor ---

def file_size(filename: str) -> int:
    """Return the file's size in bytes, or 0 if it cannot be seen (its result will say why)."""
    try:
        return os.stat(filename).st_size
    except OSError:
        return 0


def percent_done(fraction: float, finished: bool) -> int:
    """Return the fraction done as a whole percentage: 100 only once all is finished."""
    return 100 if finished else min(99, round(100 * fraction))


def estimate_seconds_left(elapsed: float, bytes_done: int, bytes_total: int) -> float | None:
    """Return the time left if the rest goes as fast as what is done, or None before any progress."""
    if bytes_done <= 0 or elapsed <= 0:
        return None
    return elapsed * max(bytes_total - bytes_done, 0) / bytes_done


def count_bytes_done(sizes: dict[str, int], results: dict[str, FileResult],
                     progress: dict[str, FileProgress]) -> int:
    """Return how many bytes of the files are done: a file with a result counts whole, one
    not started yet as 0."""
    return sum(size if name in results else progress[name].bytes_read if name in progress else 0
               for name, size in sizes.items())


def format_duration(seconds: float) -> str:
    """Return a time as a person says it: `4 s` up to a minute and a half, then `17 min`, from
    an hour and a half `2 h 5 min`."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def format_time_left(seconds_left: float | None) -> str:
    """Return `about 4 s left`, or `estimating time left` before there is anything to go by."""
    if seconds_left is None:
        return "estimating time left"
    return f"about {format_duration(seconds_left)} left"


def list_names(names: list[str], room: int) -> str:
    """Return the names joined by commas, as many as fit in `room` characters, the rest
    counted: `a.csv, b.csv and 1,498 more`; `1,500 files` if not one fits; a lone name whole."""
    if len(names) == 1 or len(", ".join(names)) <= room:
        return ", ".join(names)
    shown, used = 0, 0  # the names that fit so far, and their length joined by commas
    for name in names[:-1]:
        joined = used + len(", " if shown else "") + len(name)
        if joined + len(f" and {len(names) - shown - 1:,} more") > room:
            break
        shown, used = shown + 1, joined
    if not shown:
        return plural(len(names), "file")
    return ", ".join(names[:shown]) + f" and {len(names) - shown:,} more"


def format_progress(done: int, total: int, newly_finished: list[str],
                    seconds_left: float | None, retrying: list[str] | None = None,
                    width: int | None = None) -> str:
    """Return the monitor's line: `Processed 3 of 7 files (43%) | finished: a.csv | about 4 s left`,
    with `| waiting to retry: b.csv` while files wait to be tried again. Given a width, the
    lists of names are cut to fit it."""
    percent = percent_done(done / total if total else 1.0, done >= total)
    fixed = [f"Processed {done:,} of {total:,} files ({percent}%)"]
    if done < total:
        fixed.append(format_time_left(seconds_left))
    lists = [(label, names) for label, names in [("finished: ", newly_finished),
                                                  ("waiting to retry: ", retrying or [])] if names]
    # What is left of the width after the fixed parts, shared between the lists.
    room = (None if width is None else
            (width - len(" | ".join(fixed)) - len(" | ") * len(lists)) // max(len(lists), 1))
    parts = [label + (", ".join(names) if room is None else list_names(names, room - len(label)))
             for label, names in lists]
    return " | ".join([fixed[0], *parts, *fixed[1:]])


async def monitor_progress(filenames: list[str], results: dict[str, FileResult], *,
                           retrying: Collection[str] = (),
                           progress: dict[str, FileProgress] | None = None,
                           file_finished: asyncio.Event | None = None) -> None:
    """Print a progress line on stderr every 2 seconds, and a last one once every file has a result.

    Returns after that last line. The time left is estimated from the bytes read so far, which
    `progress` tells of the files being read. The files in `retrying`, looked at for each line,
    are named as waiting to retry. Set `file_finished` as each file gets its result, and the
    last line comes at once; without it, within a tenth of a second.
    """
    file_finished = asyncio.Event() if file_finished is None else file_finished
    names = list(dict.fromkeys(filenames))
    sizes = {name: file_size(name) for name in names}
    progress = {} if progress is None else progress
    loop = asyncio.get_running_loop()
    started = loop.time()
    next_line_at = started + MONITOR_INTERVAL_S
    reported: set[str] = set()
    while True:
        # No lock is needed around results: every task runs on this one thread and can only
        # be interrupted at an await, and there is none between reading results and printing.
        finished = [name for name in names if name in results]
        all_done = len(finished) == len(names)
        if all_done or loop.time() >= next_line_at:
            newly_finished = [name for name in finished if name not in reported]
            reported.update(newly_finished)
            seconds_left = estimate_seconds_left(loop.time() - started,
                                                 count_bytes_done(sizes, results, progress),
                                                 sum(sizes.values()))
            status_line.print(format_progress(
                len(finished), len(names), newly_finished, seconds_left,
                [name for name in names if name in retrying],
                terminal_width(sys.stderr) or LOG_LINE_WIDTH))
            next_line_at += MONITOR_INTERVAL_S
        if all_done:
            return
        # Woken by a file that finished (or, if no one tells, checking every tenth of a second),
        # the monitor prints its last line as soon as the last file is done.
        file_finished.clear()
        with suppress(TimeoutError):
            await asyncio.wait_for(file_finished.wait(), MONITOR_POLL_S)


# --- The coordinator ---

@dataclass(frozen=True, kw_only=True)
class Settings:
    """How a batch is run. It checks itself once, when made: ValueError for a value out of range."""
    max_concurrent: int = 3  # files processed at once
    delay: float = 0.1  # the simulated I/O pause after every chunk of rows
    retries: int = 0  # more attempts for a file that failed for a reason that may pass
    retry_delay: float = 0.5  # seconds before the first of them; each next wait doubles

    def __post_init__(self) -> None:
        if self.max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, not {self.max_concurrent}")
        if self.retries < 0:
            raise ValueError(f"retries must be 0 or more, not {self.retries}")
        if not math.isfinite(self.retry_delay) or self.retry_delay < 0:
            raise ValueError(f"retry_delay must be a finite number of seconds >= 0, not {self.retry_delay}")


# The ways in for an extra; each default leaves the lesson as it is.
FileReader = Callable[..., Coroutine[Any, Any, FileResult]]  # called as process_file is, in its place
ResultHook = Callable[[FileResult], None]  # hears of each file's final result
RetryHook = Callable[[str, float, str], None]  # hears of a retry: the file, the wait (s), the error
View = Callable[["Batch"], Coroutine[None, None, None]]  # drawn instead of spinner and monitor


@dataclass(kw_only=True)
class Batch:
    """What the files' tasks in one batch share, and what a view shows of it."""
    filenames: list[str]  # distinct, in input order; none when files arrive as it runs
    settings: Settings
    semaphore: asyncio.Semaphore  # max_concurrent slots
    slots: list[str | None]  # the file holding each of the semaphore's slots, None when free
    results: dict[str, FileResult] = field(default_factory=dict)
    progress: dict[str, FileProgress] = field(default_factory=dict)  # of each file's last attempt
    retrying: set[str] = field(default_factory=set)  # the files waiting to be tried again
    file_finished: asyncio.Event = field(default_factory=asyncio.Event)  # set at each result
    started: float = field(default_factory=time.perf_counter)
    read_file: FileReader | None = None  # None: the module's process_file, looked up each time
    on_result: ResultHook = ignore
    on_retry: RetryHook = ignore


def largest_first(filenames: list[str]) -> list[str]:
    """Return the names in the order to start them: largest file first, ties in input order."""
    return sorted(filenames, key=file_size, reverse=True)


class Attempt(NamedTuple):
    """One try at a file: its result, and the slot it held, from when to when."""
    result: FileResult
    slot: int
    start_offset: float  # seconds from the batch's start
    end_offset: float


async def process_in_slot(filename: str, batch: Batch) -> Attempt:
    """Process one file once the semaphore has a free slot."""
    # Every file's task starts at once, but only max_concurrent of them get past this line at a
    # time; the rest wait here, holding nothing, until a file finishes and frees its slot.
    async with batch.semaphore:
        # The semaphore only counts free slots; this list says which file holds which, for a
        # view to show, and each result says which slot it held, and when. A file frees its slot
        # before it releases the semaphore, so whoever gets in next always finds one free.
        slot = batch.slots.index(None)
        batch.slots[slot] = filename
        progress = batch.progress[filename] = FileProgress()
        taken = time.perf_counter()
        try:
            read_file = batch.read_file or process_file  # looked up now: a test may wrap it
            result = await read_file(filename, delay=batch.settings.delay, progress=progress)
        except Exception as error:
            # process_file reports file problems itself, so this is a bug; one file's bug must
            # not take the other files' results down with it.
            result = file_result(filename, "error",
                                 error=f"unexpected {type(error).__name__}: {error}")
        finally:
            batch.slots[slot] = None
        return Attempt(result, slot + 1, taken - batch.started, time.perf_counter() - batch.started)


# A file that is missing, unreadable or changing may be fine a moment later: a client is still
# uploading it, someone is fixing its permissions. With retries such a file is tried again
# after a wait that doubles each time. A directory, an empty file or a header that lacks columns
# is not: reading it again would find the same problem.
RETRY_WAIT_CAP_S = 30.0
# Each wait is made up to 10% shorter or longer at random, so that files that failed together
# (a share that went away) do not all come back at the same instant, and again after that.
RETRY_JITTER = 0.1


def retry_wait(retry: int, first_wait: float, jitter: float) -> float:
    """Return the seconds to wait before retry number `retry` (1 for the first): first_wait
    doubled for each retry before it, times 1 + jitter, and never more than RETRY_WAIT_CAP_S."""
    doublings = min(retry - 1, 64)  # 2**64 nanoseconds is centuries; 2.0**1024 would overflow
    return min(RETRY_WAIT_CAP_S, first_wait * 2.0 ** doublings * (1 + jitter))


async def process_with_retries(filename: str, batch: Batch) -> FileResult:
    """Return the file's result after up to 1 + retries attempts, trying again only a failure
    that may pass (`retryable`); the result tells of its attempts and of the last one's slot."""
    earlier_errors: list[str] = []
    work_time = pause_time = 0.0  # of every attempt: the report tells where the time went
    while True:
        attempt = await process_in_slot(filename, batch)
        work_time += attempt.result["work_time"]
        pause_time += attempt.result["pause_time"]
        if not attempt.result["retryable"] or len(earlier_errors) == batch.settings.retries:
            break
        earlier_errors.append(str(attempt.result["error"]))
        wait = retry_wait(len(earlier_errors), batch.settings.retry_delay,
                          random.uniform(-RETRY_JITTER, RETRY_JITTER))
        # The point of this pattern: the file sleeps outside process_in_slot, holding no slot,
        # so the other files keep every slot busy meanwhile. Were it to sleep in its slot, each
        # waiting file would idle a slot, and enough of them would stall the whole batch.
        batch.retrying.add(filename)
        try:
            batch.on_retry(filename, wait, earlier_errors[-1])
            await asyncio.sleep(wait)  # Ctrl-C cancels the batch here too, without waiting
        finally:
            batch.retrying.discard(filename)
    # What only the coordinator knows, added to the result in this one place.
    return attempt.result | {"attempts": len(earlier_errors) + 1, "earlier_errors": earlier_errors,
                             "work_time": work_time, "pause_time": pause_time,
                             "slot": attempt.slot, "start_offset": attempt.start_offset,
                             "end_offset": attempt.end_offset}


async def finish_file(filename: str, batch: Batch) -> None:
    """Process one file, with the retries it may need, and record its result."""
    result = await process_with_retries(filename, batch)
    batch.results[filename] = result
    batch.file_finished.set()
    batch.on_result(result)


async def process_batch(filenames: list[str], *, max_concurrent: int = 3, delay: float = 0.1,
                        retries: int = 0, retry_delay: float = 0.5,
                        results: dict[str, FileResult] | None = None,
                        read_file: FileReader | None = None, on_result: ResultHook = ignore,
                        on_retry: RetryHook = ignore, view: View | None = None) -> BatchResult:
    """Return each file's result, in input order, and a summary of the batch.

    A name listed twice is processed once. At most max_concurrent files are processed at any
    moment. A file that fails for a reason that may pass is tried up to `retries` more times,
    the first after about `retry_delay` seconds. A setting out of range raises ValueError.
    `results`, if given, is filled as files finish, so that after a cancel it holds what did.
    Extras plug in here: `read_file` reads each file in place of process_file, `on_result`
    and `on_retry` hear of each result and each retry, `view` shows the batch (see View).
    """
    names = list(dict.fromkeys(filenames))
    settings = Settings(max_concurrent=max_concurrent, delay=delay, retries=retries,
                        retry_delay=retry_delay)
    batch = Batch(filenames=names, settings=settings, semaphore=asyncio.Semaphore(max_concurrent),
                  slots=[None] * min(max_concurrent, len(names)),
                  results={} if results is None else results, read_file=read_file,
                  on_result=on_result, on_retry=on_retry)
    # The loop keeps only weak references to tasks: this list keeps them alive.
    if view is None:
        shows = [asyncio.create_task(show_spinner(f"Processing {plural(len(names), 'file')}")),
                 asyncio.create_task(monitor_progress(names, batch.results, retrying=batch.retrying,
                                                      progress=batch.progress,
                                                      file_finished=batch.file_finished))]
    else:
        shows = [asyncio.create_task(view(batch))]
    try:
        # The semaphore lets files in the order they reach it. Largest first: a big file started
        # last would run on alone after the others, with slots idle; started first, the small
        # files fill the other slots around it. The report still follows the input order.
        # gather, not a TaskGroup: process_in_slot turns failures into results, and a TaskGroup
        # would cancel every other file as soon as one raised.
        await asyncio.gather(*(finish_file(name, batch) for name in largest_first(names)))
        elapsed = time.perf_counter() - batch.started
        await shows[-1]  # the monitor's last line, or the view's last frame
    finally:
        # This runs whether the files finished, something raised, or the batch was cancelled
        # (on Python 3.11+ Ctrl-C cancels the main task). Left running, the spinner would draw
        # over the report; awaiting them makes sure the spinner has erased its line.
        for task in shows:
            task.cancel()
        await asyncio.gather(*shows, return_exceptions=True)
    return summarize_batch(names, batch.results, elapsed)


def summarize_batch(filenames: list[str], results: dict[str, FileResult],
                    elapsed: float) -> BatchResult:
    """Return the results in input order, a file with no result reported as cancelled, and the totals."""
    ordered = {name: results.get(name) or file_result(name, "cancelled") for name in filenames}
    statuses = Counter(result["status"] for result in ordered.values())
    total = Decimal(0)
    for result in ordered.values():
        total = EXACT.add(total, Decimal(result["total_amount_exact"]))
    return {
        "results": ordered,
        "summary": {
            "total_files": len(ordered),
            "completed_files": statuses["completed"],
            "failed_files": statuses["error"],
            "cancelled_files": statuses["cancelled"],
            "total_transactions": sum(r["total_transactions"] for r in ordered.values()),
            "total_amount": float(total),
            "total_amount_exact": f"{total:f}",
            "invalid_rows": sum(r["invalid_rows"] for r in ordered.values()),
            "elapsed": elapsed,
            "total_processing_time": sum(r["processing_time"] for r in ordered.values()),
            "work_time": sum(r["work_time"] for r in ordered.values()),
            "pause_time": sum(r["pause_time"] for r in ordered.values()),
        },
    }


# --- The report ---

def format_amount(text: str) -> str:
    """Return an exact amount with thousands separators and at least two decimals, never rounded."""
    value = Decimal(text)
    if value == EXACT.quantize(value, CENTS):
        return f"{value:,.2f}"
    return f"{value:,f}"


class Column(NamedTuple):
    """One column of a table: its title, its cells from top to bottom, and how they align."""
    title: str
    cells: list[str]
    right_aligned: bool = False

    def width(self) -> int:
        return max(map(len, [self.title, *self.cells]))


def format_table(columns: list[Column]) -> list[str]:
    """Return the columns side by side as lines, under their titles and a rule."""
    widths = [column.width() for column in columns]
    rows = zip(*([column.title, "-" * width, *column.cells]
                 for column, width in zip(columns, widths)))
    return ["  ".join(cell.rjust(width) if column.right_aligned else cell.ljust(width)
                      for cell, column, width in zip(row, columns, widths)).rstrip()
            for row in rows]


def table_width(columns: list[Column]) -> int:
    return sum(column.width() for column in columns) + 2 * (len(columns) - 1)


def cut_middle(text: str, width: int) -> str:
    """Return text with its middle made ... if it is wider than width (5 or more): the start
    of a path and the end of its name tell it apart."""
    if len(text) <= width:
        return text
    start = (width - 3) // 2
    return text[:start] + "..." + text[len(text) - (width - 3 - start):]


def fit_columns(columns: list[Column], width: int) -> tuple[list[Column], list[str]]:
    """Return a table made to fit in width, and the titles of the columns it left out.

    The first column holds the file names. Until they have NAME_MIN_WIDTH or their own width,
    whichever is less, the OPTIONAL_COLUMNS are left out one by one; then the names are cut
    in the middle to fit, to NAME_MIN_CUT characters at the least. A table that cannot fit even
    so (a total of 90 digits, a terminal of 40 columns) stays wider.
    """
    names, others = columns[0], columns[1:]
    left_out: list[str] = []
    for title in OPTIONAL_COLUMNS:
        if width - table_width(others) - 2 >= min(names.width(), NAME_MIN_WIDTH):
            break
        others = [column for column in others if column.title != title]
        left_out.append(title)
    room = max(width - table_width(others) - 2, NAME_MIN_CUT)
    names = names._replace(cells=[cut_middle(name, room) for name in names.cells])
    return [names, *others], left_out


def join_parts(parts: list[str], width: int | None) -> list[str]:
    """Return the parts joined by ` | `, on as many lines as keep each within width (if given),
    the next ones indented."""
    lines = [parts[0]]
    for part in parts[1:]:
        if width is None or len(lines[-1]) + len(" | ") + len(part) <= width:
            lines[-1] += " | " + part
        else:
            lines.append("    " + part)
    return lines


def wrap(line: str, width: int) -> list[str]:
    """Return the line broken at spaces into lines no wider than width, the next ones indented
    four spaces more than the first."""
    indent = " " * (len(line) - len(line.lstrip()) + 4)
    return textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False) or [line]


def format_average(result: FileResult) -> str:
    """Return a file's average as its total is shown: to as many decimals as the total has,
    at least two, rounded half to even."""
    places = max(2, -int(Decimal(result["total_amount_exact"]).as_tuple().exponent))
    return f"{Decimal(result['average_transaction_exact']):,.{places}f}"


def file_row(result: FileResult) -> list[str]:
    """Return one file's cells of the report's table."""
    seconds = "-" if result["status"] == "cancelled" else f"{result['processing_time']:.2f}"
    if result["status"] != "completed":
        return [result["filename"], result["status"], "-", "-", "-", "-", "-", "-", seconds]
    dates = result["date_range"]
    return [
        result["filename"], result["status"],
        f"{result['total_transactions']:,}", f"{result['invalid_rows']:,}",
        format_amount(result["total_amount_exact"]), format_average(result),
        result["top_category"] or "-",
        f"{dates['earliest']} to {dates['latest']}" if dates["earliest"] else "-",
        seconds,
    ]


def format_rejections(result: FileResult) -> list[str]:
    """Return the first few rejected rows of a file, with line and reason, then how many more."""
    shown = result["row_errors"][:REPORT_ROW_ERRORS]
    lines = [f"Rejected rows in {result['filename']} ({result['invalid_rows']:,}):"]
    lines += [f"  line {error['line']}: {error['reason']}" for error in shown]
    if result["invalid_rows"] > len(shown):
        lines.append(f"  and {result['invalid_rows'] - len(shown):,} more")
    if result["rejects_file"]:
        lines.append(f"  all of them are in {result['rejects_file']}")
    return lines


def format_attempts(result: FileResult) -> list[str]:
    """Return a retried file's attempts, and the error of each one that failed."""
    errors = result["earlier_errors"] + ([result["error"]] if result["error"] else [])
    lines = [f"Retried {result['filename']}: {result['attempts']} attempts, {result['status']}"]
    lines += [f"  attempt {number}: {error}" for number, error in enumerate(errors, start=1)]
    return lines


def describe_delimiter(delimiter: str) -> str:
    """Return a delimiter as the report names it: `';'`, or `tab`."""
    return "tab" if delimiter == "\t" else repr(delimiter)


# Concurrency on one thread overlaps waiting, never work: while one file waits (here, in its
# simulated I/O pause), another works. So what it saves is told from where the files' time
# went, measured by each (work_time, pause_time), and not from their wall times, which include
# waiting for a turn. Only processes (--workers) overlap work: each has a core of its own.
SPEEDUP_SHOWN = 1.05  # a batch less than 5% faster than one file after another saved nothing


def format_time_spent(summary: BatchSummary, most_at_once: int, processes: int) -> str:
    """Return the elapsed time, where the files' time went, and what running them concurrently
    saved: most_at_once files at a time, read by that many processes (1: all on this thread)."""
    elapsed, work, pause = summary["elapsed"], summary["work_time"], summary["pause_time"]
    if summary["cancelled_files"]:  # the files not read would have taken time, how much unknown
        return f"Elapsed {elapsed:.2f} s, stopped before every file was read."
    if summary["total_transactions"] + summary["invalid_rows"] == 0:  # not a row was read
        return f"Elapsed {elapsed:.2f} s."
    speedup = (work + pause) / elapsed if elapsed > 0 else 0.0
    if (speedup < SPEEDUP_SHOWN and most_at_once > 1 and processes == 1 and pause <= work
            and work >= elapsed / 2):
        return (f"Elapsed {elapsed:.2f} s, {work:.2f} s of it reading and checking rows: "
                "CPU-bound work, which one thread does one file at a time, so running files "
                "concurrently saved nothing (--workers N reads files of 1 MiB or more on more "
                "cores).")
    parts = [f"{work:.2f} s of reading and checking rows (CPU work"
             + (f", in {processes} processes)" if processes > 1 else ")")]
    if speedup < SPEEDUP_SHOWN:  # one file at a time, say, or a batch that waited to retry one
        parts += [f"{pause:.2f} s of simulated I/O"] if pause else []
        return (f"Elapsed {elapsed:.2f} s for {' and '.join(parts)}: no faster than one file "
                "after another.")
    parts += [f"{pause:.2f} s of simulated I/O, overlapped {most_at_once} files at a time"
              ] if pause else []
    return (f"Elapsed {elapsed:.2f} s for {' and '.join(parts)}: {speedup:.1f}x faster than one "
            "file after another.")


def format_file_table(results: list[FileResult], width: int | None) -> list[str]:
    """Return the table of the files, made to fit in width if one is given."""
    rows = [file_row(result) for result in results]
    columns = [Column(title, [row[index] for row in rows], title in NUMBER_COLUMNS)
               for index, title in enumerate(TABLE_COLUMNS)]
    if width is None:
        return format_table(columns)
    columns, left_out = fit_columns(columns, width)
    note = f"(left out to fit {width} columns: {', '.join(left_out)})"
    return format_table(columns) + (wrap(note, width) if left_out else [])


def format_report(batch: BatchResult, width: int | None = None) -> str:
    """Return the report: a table of the files, their rejected rows and errors, then the totals.

    Given a width (a terminal's), no line is wider, if it can be helped: the table is made
    narrower (see fit_columns), and the other lines are wrapped.
    """
    results = list(batch["results"].values())
    summary = batch["summary"]
    lines: list[str] = []
    for result in results:
        if result["invalid_rows"]:
            lines += ["", *format_rejections(result)]
    delimiters = [f"  {result['filename']}: {describe_delimiter(result['delimiter'])}"
                  for result in results if result["delimiter"] not in (None, ",")]
    if delimiters:
        lines += ["", "Columns separated by other than commas:", *delimiters]
    for result in results:
        if result["attempts"] > 1:
            lines += ["", *format_attempts(result)]
    errors = [f"  {result['filename']}: {result['error']}" for result in results if result["error"]]
    if errors:
        lines += ["", "Errors:", *errors]
    counts = f"{summary['completed_files']:,} completed, {summary['failed_files']:,} failed"
    if summary["cancelled_files"]:
        counts += f", {summary['cancelled_files']:,} cancelled"
    lines.append("")
    if width is not None:
        lines = [part for line in lines for part in wrap(line, width)]
    lines += join_parts([f"Batch: {plural(summary['total_files'], 'file')} ({counts})",
                         plural(summary["total_transactions"], "transaction"),
                         f"total {format_amount(summary['total_amount_exact'])}",
                         f"{plural(summary['invalid_rows'], 'row')} rejected"], width)
    speedup = format_time_spent(
        summary, max((result["slot"] or 0 for result in results), default=0),
        len({result["pid"] for result in results}))
    lines += [speedup] if width is None else wrap(speedup, width)
    return "\n".join(format_file_table(results, width) + lines)


def finite_or_none(value: object) -> object:
    """Return value with each float that is not finite, in it however deep, made None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite_or_none(item) for item in value]
    return value


def strict_json(value: object, indent: int | None = None) -> str:
    """Return value as JSON as RFC 8259 has it: a float past the float range (a sum of 309
    digits) is null, which the exact text beside it makes good, and never Infinity, which
    Python writes by default and strict parsers refuse."""
    return json.dumps(finite_or_none(value), indent=indent, allow_nan=False)


def format_json(batch: BatchResult) -> str:
    """Return the batch as JSON: every result and the summary, amounts unrounded."""
    return strict_json(batch, indent=2)


def exit_code(batch: BatchResult, stopped_by: int | None = None, *, all_saved: bool = True) -> int:
    """Return the exit status: 128 + the number of the signal that stopped the batch, if one did
    (130 for Ctrl-C's SIGINT), else 1 if any file failed or a result could not be saved, else 0."""
    if stopped_by is not None:
        return EXIT_SIGNALLED + stopped_by
    if not all_saved or any(result["status"] != "completed" for result in batch["results"].values()):
        return EXIT_FILE_ERROR
    return EXIT_OK


# --- Reading faster ---

# An optimisation, which the lesson can do without. Almost every line of a real file is simple:
# one row, no quotes, no bad bytes, so all the csv module would do is split it at delimiters.
# Such lines can be split and checked by a few string and list operations, each one C loop,
# instead of a dozen Python steps per row, and the more lines at once, the fewer steps. So a
# file is read in blocks of text, each cut at the end of a chunk: a block of simple lines is
# split and checked at once, and its chunks are folded one per call of fold_chunk, so the loop
# still gets its turn every ROWS_PER_CHUNK rows. A block with a line that is not simple is read
# as lines, a chunk at a time, as standard input always is. Reading gets about four and a half
# times faster (see benchmarks/bench.py). The rules are check_row's: a chunk the faster reader
# is unsure of goes to check_row, a row at a time.

BLOCK_CHARACTERS = 2 ** 16  # read at a time: some fifteen chunks of most files' lines
MAX_SEEN_DATES = 10_000
AMOUNTS_TEXT = re.compile(r"[0-9.+\n-]*")  # amounts, one a line, of nothing but these
# What str.strip takes off the ends of an ASCII field, but line ends: no simple field has one.
ASCII_SPACES = "".join(char for char in map(chr, range(128))
                       if char.isspace() and char not in "\r\n")


class SimpleRows(NamedTuple):
    """A chunk of valid rows, as much of them as the statistics need."""
    row_count: int
    total: Decimal
    new_dates: set[str]  # the dates not in seen_dates: only those can widen the date range
    categories: list[str]


def split_simple_lines(text: str, width: int, delimiter: str) -> list[str] | None:
    """Return the fields of text's lines, each row followed by a "\n" field, or None if a line is
    not simple or not `width` fields long. Simple lines are whole lines that csv would split at
    every delimiter: no quotes, no bad bytes, no field over csv's size limit."""
    if "\r" in text:  # a quick look first: replace() is slow even with nothing to replace
        text = text.replace("\r\n", "\n")
    if not (text.endswith("\n") and '"' not in text and "\r" not in text
            and not is_undecodable(text)):
        return None
    spread = text.replace("\n", f"{delimiter}\n{delimiter}")
    line_count = (len(spread) - len(text)) // 2  # each newline gained two delimiters
    fields = spread.split(delimiter)
    fields.pop()  # the empty field after the last newline
    # Every (width + 1)th field must be a newline: one line with a field too many or too few
    # moves the newlines after it out of step, even if another line makes the count up.
    if len(fields) != (width + 1) * line_count or fields[width::width + 1].count("\n") != line_count:
        return None
    # No field is longer than the text, so only a long text needs its fields measured.
    limit = csv.field_size_limit()
    if len(text) > limit and max(map(len, fields)) > limit:
        return None
    return fields


def may_be_padded(text: str) -> bool:
    """Whether a field of text may have something for str.strip to take off: not if text is
    ASCII with no space, tab or the like (a line end is not in a field)."""
    return not text.isascii() or any(space in text for space in ASCII_SPACES)


def check_simple_rows(fields: list[str], columns: Columns, seen_dates: set[str], *,
                      padded: bool = True) -> list[SimpleRows] | None:
    """Return the rows of split simple lines (see split_simple_lines), ROWS_PER_CHUNK at a time,
    as SimpleRows if every row is valid; else None. With padded False, no field is stripped:
    none needs it.

    seen_dates holds the dates of rows already counted: known real, and inside the date range.
    """
    stride = len(columns.names) + 1
    ids, customers, amounts, dates, categories = [fields[position::stride]
                                                  for position in columns.positions]
    if padded:
        ids, customers, categories = [list(map(str.strip, column))
                                      for column in (ids, customers, categories)]
    if not (all(categories) and all(ids) and all(customers)):
        return None
    # Most rows hold a date seen before, and asking that is cheaper than building a set.
    new_dates = set() if seen_dates.issuperset(dates) else set(dates) - seen_dates
    if not all(map(is_calendar_date, new_dates)):
        return None
    amounts_text = "\n".join(amounts)
    if columns.format.decimal_comma:
        if "." in amounts_text:
            return None
        amounts_text = amounts_text.replace(",", ".")
        amounts = amounts_text.split("\n")
    # Made of nothing but digits, signs and points, an amount is in plain decimal notation
    # exactly when Decimal can read it (no letters: no exponent, NaN or Infinity).
    if AMOUNTS_TEXT.fullmatch(amounts_text) is None:
        return None
    chunks = []
    try:
        with localcontext(EXACT):
            values = list(map(Decimal, amounts))
            for start in range(0, len(values), ROWS_PER_CHUNK):
                chunk = slice(start, start + ROWS_PER_CHUNK)
                chunk_dates = new_dates.intersection(dates[chunk]) if new_dates else set()
                chunks.append(SimpleRows(len(values[chunk]), sum(values[chunk], Decimal(0)),
                                         chunk_dates, categories[chunk]))
    except InvalidOperation:
        return None
    return chunks


def check_simple_lines(lines: list[str], columns: Columns, seen_dates: set[str]) -> SimpleRows | None:
    """Return a chunk of lines as SimpleRows if every line is a simple, valid row; else None."""
    fields = split_simple_lines("".join(lines), len(columns.names), columns.format.delimiter)
    chunks = None if fields is None else check_simple_rows(fields, columns, seen_dates)
    return None if chunks is None else chunks[0]


def add_simple_rows(rows: SimpleRows, tally: FileTally, seen_dates: set[str]) -> None:
    """Fold valid rows into tally, and remember their dates in seen_dates."""
    tally.add_many(rows.row_count, rows.total, rows.categories, rows.new_dates)
    if len(seen_dates) < MAX_SEEN_DATES:  # a year adds 366: a bound only odd files reach
        seen_dates |= rows.new_dates


class SimpleBlock(NamedTuple):
    """A block of simple lines, split: whole chunks, or the file's last lines."""
    fields: list[str]  # see split_simple_lines
    padded: bool  # whether a field may need stripping (see may_be_padded)


# A chunk of a block, as check_simple_block leaves it for fold_checked_chunk: its figures if
# every row is valid, else its fields, to check a row at a time.
CheckedChunk = SimpleRows | list[str]


class TextBlocks:
    """A file's text after its header, as fold_simple_chunk reads it: a block at a time where
    the file allows it, else a chunk of lines at a time. Once fold_simple_chunk has taken over a
    ChunkReader's lines, they are this: what it leaves, the csv module reads through it."""

    def __init__(self, lines: Iterator[str], read_block: Callable[[int], str] | None) -> None:
        self.source = lines  # the file's lines, after the text read ahead of them
        self.read_block = read_block
        self.chunks: deque[CheckedChunk] = deque()  # the chunks of a block not yet folded
        self.carry = ""  # the lines after a block's last whole chunk: the next block's first
        self.ahead = io.StringIO()  # a block whose lines are not all simple, read as lines
        self.ahead_length = 0
        self.lines: Iterator[str] = lines  # what is read as lines: the rest of ahead, then source

    def __iter__(self) -> Iterator[str]:
        # The csv module asks for an iterator once per chunk: given the lines themselves, it
        # reads them without a call to Python for each.
        return self.lines

    def __next__(self) -> str:
        return next(self.lines)

    def read_next_block(self, width: int, delimiter: str) -> SimpleBlock | None:
        """Return the next block of text, up to the end of its last whole chunk (or of the file),
        split, if its lines are simple. Return None if they are not, and keep them to be read
        as lines. Return None too while such lines are left, and for a file that cannot be read
        in blocks."""
        if self.read_block is None or self.ahead.tell() < self.ahead_length:
            return None
        text = self.carry
        line_ends = text.count("\n")
        while True:
            block = self.read_block(BLOCK_CHARACTERS)
            # A block may end inside a line, or between the \r and \n of its end.
            added = block if block.endswith("\n") else block + next(self.source, "")
            text += added
            line_ends += added.count("\n")
            if block and line_ends < ROWS_PER_CHUNK:
                continue  # long lines: read on before splitting, not split all of it again
            fields = split_simple_lines(text, width, delimiter)
            if fields is None:
                self.carry = ""
                self.ahead = io.StringIO(text, newline="")  # lines end as in the file's reader
                self.ahead_length = len(text)
                self.lines = itertools.chain(self.ahead, self.source)
                return None
            row_count = len(fields) // (width + 1)
            if row_count >= ROWS_PER_CHUNK or not block:
                break
        # Each call of fold_chunk folds a whole chunk until the end of the file, so the lines
        # after the last whole one wait for the next block.
        whole = row_count - row_count % ROWS_PER_CHUNK if block else row_count
        cut = len(text)
        for _ in range(row_count - whole):
            cut = text.rindex("\n", 0, cut - 1) + 1
        self.carry = text[cut:]
        return SimpleBlock(fields[:whole * (width + 1)], may_be_padded(text))


def check_simple_block(block: SimpleBlock, columns: Columns, seen_dates: set[str],
                       ) -> list[CheckedChunk]:
    """Return a block's chunks, each as SimpleRows if all its rows are valid, else as its fields."""
    chunks: list[CheckedChunk] = []
    rows = check_simple_rows(block.fields, columns, seen_dates, padded=block.padded)
    if rows is not None:
        chunks.extend(rows)
        return chunks
    # A row is not valid: each chunk is checked alone, so that only the row's own goes to check_row.
    step = ROWS_PER_CHUNK * (len(columns.names) + 1)
    for start in range(0, len(block.fields), step):
        fields = block.fields[start:start + step]
        rows = check_simple_rows(fields, columns, seen_dates, padded=block.padded)
        chunks.append(fields if rows is None else rows[0])
    return chunks


def fold_checked_chunk(chunk: CheckedChunk, reader: ChunkReader, tally: FileTally) -> int:
    """Fold a chunk of a block into tally; return how many rows there were. Fields go to
    check_row a row at a time: those of a simple line are what the csv module would read."""
    if isinstance(chunk, SimpleRows):
        add_simple_rows(chunk, tally, reader.seen_dates)
        row_count = chunk.row_count
    else:
        stride = len(reader.columns.names) + 1
        row_count = len(chunk) // stride
        for row in range(row_count):
            tally.fold(reader.lines_read + row + 1, chunk[row * stride:(row + 1) * stride - 1],
                       reader.columns)
    reader.lines_read += row_count
    return row_count


def fold_simple_chunk(reader: ChunkReader, tally: FileTally) -> int | None:
    """Fold the next chunk of reader's records into tally if its lines are simple, and return how
    many there were; else return None, and leave them in reader.lines for the csv module."""
    if not isinstance(reader.lines, TextBlocks):
        reader.lines = TextBlocks(reader.lines, reader.read_block)
    blocks = reader.lines
    if not blocks.chunks:
        block = blocks.read_next_block(len(reader.columns.names), reader.columns.format.delimiter)
        if block is not None:
            blocks.chunks.extend(check_simple_block(block, reader.columns, reader.seen_dates))
    if blocks.chunks:
        return fold_checked_chunk(blocks.chunks.popleft(), reader, tally)
    chunk = list(itertools.islice(blocks.lines, ROWS_PER_CHUNK))
    rows = check_simple_lines(chunk, reader.columns, reader.seen_dates)
    if rows is None:
        # A record may span lines, so the csv module may read on past the chunk; it stops after
        # ROWS_PER_CHUNK records, at or after the chunk's end, so no line is read twice.
        blocks.lines = itertools.chain(chunk, blocks.ahead, blocks.source)
        return None
    add_simple_rows(rows, tally, reader.seen_dates)
    reader.lines_read += len(chunk)
    return len(chunk)


# --- Client files ---

# The lesson's files are UTF-8 with commas between columns. Clients send others: a Windows
# export in cp1252, Excel's "Unicode text" (UTF-16 with a byte-order mark), semicolons or tabs
# between columns, amounts written 12,50, a file gzipped, or a pipe. ClientFiles.open_input is
# an opener for process_file that reads all of them; what it learns (the encoding, the
# delimiter) goes into the CsvFormat the core reads rows with, so every row meets the same rules.

STDIN = "-"  # the name that means: read standard input
OTHER_DELIMITERS = (";", "\t", "|")  # tried, in this order, when a header fits none at commas
MAX_HEADER_CHARACTERS = 2 ** 20  # how far to look for the header's end, should a quote never close
NOT_NAMES = str.maketrans("", "", '",;\t|')  # what a line before the header may hold besides spaces
GZIP_MAGIC = b"\x1f\x8b"  # the first two bytes of every gzip file
STDIN_READ_BYTES = 2 ** 16  # standard input is read this much at a time,
STDIN_BUFFER_BYTES = 2 ** 20  # and no more once this much is waiting to be taken
# Each byte-order mark, and the codec that reads the text after it, whatever --encoding says.
# UTF-32's little-endian mark begins with UTF-16's, so it must be tried first.
BYTE_ORDER_MARKS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                    (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                    (codecs.BOM_UTF16_BE, "utf-16"))
ESCAPE_UNDECODABLE = "processor.escape_undecodable"  # the name of the error handler below


def escape_undecodable(error: UnicodeError) -> tuple[str, int]:
    """Keep each byte a codec cannot decode as the lone surrogate U+DC00 + byte. This is what
    surrogateescape does, but that handler gives up on a bad byte below 128, and in UTF-16 or
    UTF-32 any byte can be one."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    bad_bytes = error.object[error.start:error.end]
    return "".join(chr(0xDC00 + byte) for byte in bad_bytes), error.end


codecs.register_error(ESCAPE_UNDECODABLE, escape_undecodable)


def is_csv_name(name: str) -> bool:
    """Return whether a file of this name in a folder is one to process: name.csv or
    name.csv.gz, in any case, and not hidden."""
    return name.lower().endswith((".csv", ".csv.gz")) and not name.startswith(".")


def split_extension(name: str) -> tuple[str, str]:
    """Split a file's name into its stem and extension, .csv.gz counting as one."""
    if name.lower().endswith(".csv.gz"):
        return name[:-len(".csv.gz")], name[-len(".csv.gz"):]
    return os.path.splitext(name)


def choose_codec(start: bytes, encoding: str) -> tuple[str, str]:
    """Return the codec to read a file with, given its first bytes, and the encoding's name
    for messages: a byte-order mark chooses, else the encoding asked for."""
    for mark, codec in BYTE_ORDER_MARKS:
        if start.startswith(mark):
            return codec, codec.removesuffix("-sig").upper()
    name = codecs.lookup(encoding).name
    if name == "utf-8":
        return "utf-8-sig", "UTF-8"  # a byte-order mark, if any, is not part of the header
    if name in ("utf-16", "utf-32"):
        # Python's utf-16 and utf-32 readers insist on a mark; without one, the byte order
        # Windows writes (utf-16-be and utf-32-be say the other).
        return f"{name}-le", encoding
    return encoding, encoding


def errors_for(codec: str) -> str:
    """Return the error handler to decode with: surrogateescape for UTF-8, the common case,
    as it runs in C; escape_undecodable, slower, for others, whose bad bytes may be below 128."""
    return "surrogateescape" if codec == "utf-8-sig" else ESCAPE_UNDECODABLE


def first_bytes(binary: "io.BufferedReader | gzip.GzipFile") -> bytes:
    """Return the first four bytes of a file, and leave it where it was. (peek() might give
    fewer: one gzip member can hold a single byte.)"""
    position = binary.tell()
    start = binary.read(4)
    binary.seek(position)
    return start


def read_header_lines(lines: Iterator[str]) -> list[str]:
    """Read lines up to the header's last: the first line with more than blanks, quotes and
    delimiters, and any its quotes run on into (MAX_HEADER_CHARACTERS at most)."""
    read: list[str] = []
    characters = 0
    started = False
    quotes = 0
    for line in lines:
        read.append(line)
        characters += len(line)
        started = started or bool(line.translate(NOT_NAMES).strip())
        if started:
            quotes += line.count('"')
        if (started and quotes % 2 == 0) or characters > MAX_HEADER_CHARACTERS:
            break
    return read


def header_problem(lines: list[str], file_format: CsvFormat) -> FileProblem | None:
    """Return why the header in these lines is unusable with this format, or None if it is not."""
    try:
        ChunkReader(lines, file_format)  # it reads the header, and nothing more
    except FileProblem as problem:
        return problem
    return None


def guess_delimiter(lines: list[str], file_format: CsvFormat) -> str:
    """Return the delimiter of a header: a comma, unless the required columns are there only
    with one of OTHER_DELIMITERS. A file with no header is left to the comma, whose reader
    will say so. Raise FileProblem when the columns are there with none, or with several."""
    comma_problem = header_problem(lines, file_format)
    if comma_problem is None or isinstance(comma_problem, EmptyFile):
        return ","
    fits = [delimiter for delimiter in OTHER_DELIMITERS
            if header_problem(lines, file_format._replace(delimiter=delimiter)) is None]
    if len(fits) == 1:
        return fits[0]
    if not fits:
        tried = ", ".join(map(describe_delimiter, (",", *OTHER_DELIMITERS)))
        raise FileProblem(f"{comma_problem}; tried {tried} between columns")
    both = " and ".join(map(describe_delimiter, fits))
    raise FileProblem(f"Header has the required columns with {both} between them: "
                      "say which with --delimiter")


class StdinPump(io.RawIOBase):
    """Standard input, read ahead by a thread of its own. A pipe's next bytes may be a long
    time coming; the event loop waits for them at an await (lines_arrived), not in a read.

    Lines are counted as bytes 0x0A, which is right for UTF-8 and the one-byte encodings. A
    chunk of records with line breaks inside quotes, or of UTF-16 text, may need more than
    were counted; the loop then waits in readinto for the rest, as it would for a file."""

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        self.fd = fd
        self.loop = loop
        self.buffer = bytearray()  # read by the thread, not yet taken by the loop
        self.newlines = 0  # in the buffer: kept up to date, as counting it anew would be slow
        self.taken = 0  # bytes the loop has taken
        self.ended = False
        self.error: OSError | None = None
        self.changed = threading.Condition()  # guards the five above, between the two threads
        self.arrived = asyncio.Event()  # set, through the loop, when the thread added bytes
        # A daemon: stopped by Ctrl-C, the program must not wait for a read that never ends.
        threading.Thread(target=self.pump, name="stdin", daemon=True).start()

    def pump(self) -> None:
        """In the thread: read until the end, never more than STDIN_BUFFER_BYTES ahead."""
        while True:
            with self.changed:
                self.changed.wait_for(lambda: len(self.buffer) < STDIN_BUFFER_BYTES or self.closed)
            if self.closed:  # the file is done with, or failed: leave the rest unread
                return
            try:
                block = os.read(self.fd, STDIN_READ_BYTES)
            except OSError as error:
                block = b""
                self.error = error
            with self.changed:
                self.buffer += block
                self.newlines += block.count(b"\n")
                self.ended = not block
                self.changed.notify_all()
            try:
                self.loop.call_soon_threadsafe(self.arrived.set)
            except RuntimeError:  # the loop has closed (a Ctrl-C): nobody will read on
                return
            if not block:
                return

    async def lines_arrived(self) -> None:
        """Wait until the next chunk's lines are in the buffer, or it is full, or input ended."""
        while True:
            with self.changed:
                if (self.ended or len(self.buffer) >= STDIN_BUFFER_BYTES
                        or self.newlines > ROWS_PER_CHUNK):
                    return
                # Cleared under the lock: bytes added after the look above set it again.
                self.arrived.clear()
            await self.arrived.wait()

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        super().close()
        with self.changed:
            self.changed.notify_all()  # a thread waiting for room: there will be none

    def readinto(self, buffer: "WriteableBuffer") -> int:
        """Take bytes from the buffer; wait for the thread only if it is empty (see
        lines_arrived)."""
        with self.changed:
            self.changed.wait_for(lambda: bool(self.buffer) or self.ended)
            if self.error is not None and not self.buffer:
                raise self.error
            taken = self.buffer[:len(memoryview(buffer))]
            memoryview(buffer)[:len(taken)] = taken
            del self.buffer[:len(taken)]
            self.newlines -= taken.count(b"\n")
            self.taken += len(taken)
            self.changed.notify_all()
        return len(taken)


@dataclass(frozen=True)
class ClientFiles:
    """How to read the files clients send; open_input is an opener for process_file."""
    encoding: str = "utf-8"  # unless a byte-order mark says otherwise
    delimiter: str | None = None  # None: a comma, or another the header shows
    decimal_comma: bool = False

    def open_input(self, filename: str) -> AbstractAsyncContextManager[CsvInput]:
        """Open standard input for `-`, a file through gzip if its name ends .gz, else a file."""
        if filename == STDIN:
            return self.open_stdin()
        if filename.lower().endswith(".gz"):
            return self.open_gzip(filename)
        return self.open_file(filename)

    @asynccontextmanager
    async def open_file(self, filename: str) -> AsyncIterator[CsvInput]:
        check_regular_file(filename)
        with open(filename, "rb") as raw, \
                self.read_text(raw, first_bytes(raw)) as (lines, read_block, file_format):
            yield input_from_descriptor(raw.fileno(), lines, file_format, read_block)

    @asynccontextmanager
    async def open_gzip(self, filename: str) -> AsyncIterator[CsvInput]:
        import gzip
        import zlib
        check_regular_file(filename)
        try:
            with open(filename, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as unzipped, \
                    self.read_text(unzipped, first_bytes(unzipped)) as (
                        lines, read_block, file_format):
                # Progress and changes are told from the compressed bytes: those are the file.
                yield input_from_descriptor(raw.fileno(), lines, file_format, read_block)
        except (EOFError, zlib.error, gzip.BadGzipFile) as error:
            # Raised as the rows are read, it comes out of process_file's with block through
            # here. A file cut short was not read to its end: none of its rows may count.
            raise FileProblem(f"Cannot be read as gzip: {error}") from None

    @asynccontextmanager
    async def open_stdin(self) -> AsyncIterator[CsvInput]:
        """Open standard input. It cannot be read twice, so no error of it is worth a retry:
        each is a FileProblem, not an OSError."""
        if sys.stdin is None:  # closed (<&-)
            raise FileProblem("Standard input is closed")
        try:
            pump = StdinPump(sys.stdin.fileno(), asyncio.get_running_loop())
        except OSError as error:
            raise FileProblem(f"Cannot read standard input: {error.strerror or error}") from None
        try:
            await pump.lines_arrived()  # the header's, at least
            # Lines only: a block could make the loop wait for the pipe (see CsvInput).
            with self.read_text(io.BufferedReader(pump), bytes(pump.buffer[:4])) as (
                    lines, _, file_format):
                yield CsvInput(lines, file_format, bytes_read=lambda: pump.taken,
                               check_unchanged=ignore, lines_arrived=pump.lines_arrived)
        except OSError as error:
            raise FileProblem(f"Cannot read standard input: {error.strerror or error}") from None
        finally:
            pump.close()

    @contextmanager
    def read_text(self, binary: "io.BufferedReader | gzip.GzipFile", start: bytes,
                  ) -> Iterator[tuple[Iterator[str], Callable[[int], str], CsvFormat]]:
        """Read binary, whose first bytes are start, as lines of text; yield them, a function
        that reads on from where they are (see CsvInput), and the format they are written in."""
        if start.startswith(GZIP_MAGIC):
            raise FileProblem("Compressed with gzip: a file must be named .gz, standard input "
                              "piped through zcat")
        codec, encoding = choose_codec(start, self.encoding)
        text = io.TextIOWrapper(binary, encoding=codec, errors=errors_for(codec), newline="")
        try:
            file_format = CsvFormat(encoding, self.delimiter or ",", self.decimal_comma)
            if self.delimiter is not None:
                yield text, text.read, file_format
            else:
                header = read_header_lines(text)
                delimiter = guess_delimiter(header, file_format)
                # The lines read for the header come again, before the rest. The header may end
                # before them (a quote in a name can make them run on): a first block takes what
                # it left of them.
                unread = iter(header)
                yield (itertools.chain(unread, text),
                       lambda size: "".join(unread) + text.read(size),
                       file_format._replace(delimiter=delimiter))
        finally:
            # Once garbage, text would close the streams under it, down to binary: the caller's
            # to close, and for standard input, sys.stdin's. Detached, it lets go of them.
            text.detach()


# --- Using more cores ---

# Reading and checking rows is CPU work, and the event loop's one thread does it for one file
# at a time: asyncio overlaps waiting, never working (the report's last line says which the
# batch did). More threads would not help: in CPython only one thread at a time runs Python
# code (the GIL). A process has an interpreter, and so a core, of its own. With --workers, a
# file of WORKER_MIN_BYTES or more is read in a worker process, and its reader, in the event
# loop, awaits the worker's result as loop.run_in_executor has it awaited, like any other
# wait: to the coordinator it is one more await in a read_file, so the semaphore, the spinner
# and monitor, retries and every extra work as they are, and the loop stays free for them
# while the workers work. Smaller files stay on the loop's thread: sending one to a process
# would cost more than reading it.
#
# A worker runs the same reader, the same process_file, in an event loop of its own, where the
# simulated pause is a sleep that holds up nothing else. Twenty times a second it writes how
# far it has got into its cell, a few numbers in memory shared with the parent, and looks
# there for word to stop: the parent writes that when a file's task is cancelled (Ctrl-C,
# SIGTERM), without waiting for the worker, which then ends the file at its next await and
# removes what it wrote. The workers themselves ignore the stop signals, which a terminal
# sends the whole process group: the parent decides, and tells them.

WORKER_MIN_BYTES = 2 ** 20
WORKER_REPORT_S = 0.05  # how often a worker tells its progress, and looks for word to stop
WORKER_WATCH_S = 0.5  # without process descriptors, how often a worker looks for the main one
# A job's cell: the worker's pid, its progress (bytes read, valid rows, rejected rows), and a
# word to stop, in this order.
WORKER, BYTES_READ, ROWS, REJECTED, STOP = range(5)
CELL_SIZE = STOP + 1


class WorkerJob(NamedTuple):
    """A file to read in a worker process, sent there pickled: its reader must be a function
    defined at the module's top level, or a functools.partial of one."""
    read_file: FileReader
    filename: str
    delay: float
    cell: int  # where in the shared cells the worker reports


# In a worker process: the cells of every job, shared with the main process.
worker_cells: "ctypes.Array[ctypes.c_int64] | None" = None


def start_worker(cells: "ctypes.Array[ctypes.c_int64]", main: int) -> None:
    """Run in each worker process as it starts: keep the shared cells, and watch the main
    process (its pid is main)."""
    global worker_cells
    worker_cells = cells
    threading.Thread(target=end_with, args=(main,), name="watchdog", daemon=True).start()


def end_with(main: int) -> None:
    """In a worker's own thread: end the worker once the main process has ended."""
    # Killed (kill -9), the main process tells no one, and a worker would read on, or wait for
    # its next file, for ever. A process descriptor (Linux 5.3 on) becomes readable as the
    # process ends; elsewhere, kill(pid, 0) asks whether it is still there, which a killed
    # process whose parent has yet to collect it, a zombie, still is.
    import select
    try:
        select.select([os.pidfd_open(main)], [], [])
    except ProcessLookupError:  # it had ended already
        pass
    except (AttributeError, OSError):  # no process descriptors here
        with suppress(OSError):
            while True:
                os.kill(main, 0)
                time.sleep(WORKER_WATCH_S)
    os._exit(1)


def run_job(job: WorkerJob) -> FileResult | None:
    """In a worker process: return the file's result, or None if the main process said to stop."""
    return asyncio.run(read_and_report(job))


async def read_and_report(job: WorkerJob) -> FileResult | None:
    """Read the file, telling its progress in its cell, until it is done or the main process
    says to stop."""
    assert worker_cells is not None
    cell = job.cell * CELL_SIZE
    progress = FileProgress()
    worker_cells[cell + WORKER] = os.getpid()
    reading: asyncio.Task[FileResult] = asyncio.create_task(
        job.read_file(job.filename, delay=job.delay, progress=progress))
    while not reading.done():
        worker_cells[cell + BYTES_READ] = progress.bytes_read
        worker_cells[cell + ROWS] = progress.tally.count
        worker_cells[cell + REJECTED] = progress.tally.invalid_rows
        if worker_cells[cell + STOP] and not reading.cancelling():
            reading.cancel()  # once: the reader's finally blocks remove what it wrote
        await asyncio.wait([reading], timeout=WORKER_REPORT_S)
    if reading.cancelled():
        return None
    return reading.result()


def start_ignoring(signals: Collection[int], start: Callable[[], None]) -> None:
    """Call start, which starts processes, so that they ignore the signals from birth."""
    # An ignored signal stays ignored in a child, across exec too; so they are ignored as the
    # children start, and blocked meanwhile, so that one meant for this process waits. Blocked
    # in this thread only: another thread could take one and, ignored, lose it. So workers
    # are started before any other thread.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    handlers = {number: signal.signal(number, signal.SIG_IGN) for number in signals}
    try:
        start()
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


class Workers:
    """The worker processes of a run, and the cells they report in. start() starts them all,
    to be warm for the first file; stop() ends them once the run is over."""

    def __init__(self, count: int) -> None:
        """count is max_concurrent: one worker a slot. With fewer, a file would wait for a
        worker that another file holds while it sleeps in its pause; more would never all
        have a file."""
        import multiprocessing
        # forkserver, not fork: a forked worker would start as a copy of this process, its
        # threads, event loop and open files included. forkserver starts each from a small,
        # clean process that forked nothing of ours.
        self.context = multiprocessing.get_context("forkserver")
        self.count = count
        # A cell is free once its job is done: a job of each slot, and one of each worker
        # that was told to stop and has yet to.
        cells = 2 * count
        self.cells = self.context.RawArray("q", cells * CELL_SIZE)
        self.free_cells = list(range(cells))
        self.pool: ProcessPoolExecutor | None = None
        self.ended: set[int] = set()  # the workers this process killed (see lost)

    def start(self) -> None:
        """Start the worker processes, and wait until each has taken a job (which it does once
        it has imported this module). Raise BrokenProcessPool if one died in the midst of it."""
        from multiprocessing import forkserver, resource_tracker
        with signals_held():
            # The resource tracker, which the forkserver needs, ignores SIGINT and SIGTERM
            # itself; but as it starts it unblocks them, which must not happen while they are
            # ignored here, or one would be lost: so it comes first, ignoring only SIGHUP.
            start_ignoring([signal.SIGHUP], resource_tracker.ensure_running)
            start_ignoring(STOP_SIGNALS, forkserver.ensure_running)
            # A stop signal would leave a process half started: it is held until all are.
            self.pool = self.new_pool()
            # The pool starts a worker for each job submitted while none is idle. A worker
            # ready early may take more than one, so they are sent until each has had one.
            ready: set[int] = set()
            while len(ready) < self.count:
                ready.update(job.result() for job in [self.pool.submit(os.getpid)
                                                      for _ in range(self.count)])

    def new_pool(self) -> "ProcessPoolExecutor":
        """Return a pool of count workers, each started when a job first needs it."""
        from concurrent.futures import ProcessPoolExecutor
        return ProcessPoolExecutor(self.count, mp_context=self.context,
                                   initializer=start_worker, initargs=(self.cells, os.getpid()))

    def submit(self, read_file: FileReader, filename: str, delay: float,
               ) -> "tuple[WorkerJob, ProcessPoolExecutor, Future[FileResult | None]]":
        """Send a file to a worker; return its job, the pool and the job's future. The job's
        cell is freed once the job is done."""
        from concurrent.futures.process import BrokenProcessPool
        job = WorkerJob(read_file, filename, delay, self.free_cells.pop())
        self.cells[job.cell * CELL_SIZE:(job.cell + 1) * CELL_SIZE] = [0] * CELL_SIZE
        try:
            if self.pool is None:  # a dead worker broke the last one
                self.pool = self.new_pool()
            try:
                future = self.pool.submit(run_job, job)
            except BrokenProcessPool:  # a worker died while it had no file: nothing is lost
                self.lost(self.pool)
                self.pool = self.new_pool()
                future = self.pool.submit(run_job, job)
        except BaseException:
            self.free_cells.append(job.cell)
            raise
        # Called in the pool's own thread: list.append is atomic, no lock needed.
        future.add_done_callback(lambda _: self.free_cells.append(job.cell))
        return job, self.pool, future

    def tell_progress(self, cell: int, progress: FileProgress) -> None:
        """Copy a job's progress from its cell, for the monitor and the dashboard."""
        start = cell * CELL_SIZE
        progress.bytes_read = self.cells[start + BYTES_READ]
        progress.tally.count = self.cells[start + ROWS]
        progress.tally.invalid_rows = self.cells[start + REJECTED]

    def stop_job(self, cell: int) -> None:
        """Tell the worker with this job to stop it."""
        self.cells[cell * CELL_SIZE + STOP] = 1

    def died_on_its_own(self, cell: int) -> bool:
        """Whether the worker that took a job has ended, and not because lost() ended it."""
        pid = self.cells[cell * CELL_SIZE + WORKER]
        return pid not in self.ended and pid != 0 and not is_running(pid)

    def lost(self, pool: "ProcessPoolExecutor") -> None:
        """End a pool that a dead worker broke, and its other workers, whose files have failed
        with it; the next job makes a new pool."""
        if pool is not self.pool:
            return  # another file's task has seen to it
        # The pool would end them with SIGTERM, which the workers ignore (see start).
        self.ended.update(pool._processes)  # keyed by pid
        for process in pool._processes.values():
            process.kill()
        pool.shutdown(wait=False)
        self.pool = None

    def stop(self) -> None:
        """Tell every job to stop, and wait for the workers to end (a chunk's work at most)."""
        for cell in range(len(self.cells) // CELL_SIZE):
            self.stop_job(cell)
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


class WorkerDied(Exception):
    """The worker reading a file has died: the file was not read to its end."""


async def read_in_a_worker(workers: Workers, read_file: FileReader, filename: str,
                           delay: float, progress: FileProgress) -> FileResult:
    """Read a file in a worker process, following its progress. Raise WorkerDied if its
    worker died, BrokenProcessPool if another worker did and took the pool down with it."""
    from concurrent.futures.process import BrokenProcessPool
    job, pool, done = workers.submit(read_file, filename, delay)
    # What loop.run_in_executor does, but keeping the pool's future, whose callback frees
    # the cell once the worker, not this task, is done with the file.
    result = asyncio.wrap_future(done)
    try:
        while not result.done():
            await asyncio.wait([result], timeout=WORKER_REPORT_S)
            workers.tell_progress(job.cell, progress)
        finished = result.result()
        assert finished is not None  # None only once told to stop, with no one waiting for it
        return finished
    except BrokenProcessPool:
        died = workers.died_on_its_own(job.cell)  # asked before lost() ends the others
        workers.lost(pool)
        if died:
            raise WorkerDied from None
        raise
    finally:
        if not done.done():  # the task was cancelled: the worker stops without it waiting
            workers.stop_job(job.cell)
            result.cancel()  # and the job with it, if no worker has taken it yet


async def read_using_workers(workers: Workers, read_file: FileReader, filename: str, *,
                             delay: float, progress: FileProgress) -> FileResult:
    """Read a file with read_file in a worker process if it is large, else right here."""
    from concurrent.futures.process import BrokenProcessPool
    if filename == STDIN or file_size(filename) < WORKER_MIN_BYTES:
        return await read_file(filename, delay=delay, progress=progress)
    started = time.perf_counter()
    try:
        try:
            return await read_in_a_worker(workers, read_file, filename, delay, progress)
        except BrokenProcessPool:
            # Another file's worker died, and took the pool down: its own was well. It is read
            # again, from the start, in the new pool; but once only, in case its worker's
            # death went unseen.
            return await read_in_a_worker(workers, read_file, filename, delay, progress)
    except (WorkerDied, BrokenProcessPool):
        return file_result(filename, "error", seconds=time.perf_counter() - started,
                           retryable=True, error="its worker process died (killed by the "
                           "system, out of memory?): the file was not read to its end")


# --- Saving to SQLite ---

# Every sqlite3 call waits for the disk, and a database another program has locked can make one
# wait for seconds: on the event loop's thread that would freeze every file, the spinner and
# Ctrl-C. So a writer thread owns the only connection, and the loop hands it each result through
# a queue.Queue: put() on a queue with no size limit returns at once, and the queue does the
# locking between the two threads. The thread writes results in the order they come, until the
# sentinel that ends the batch. main opens the writer, plugs in its save as on_result, and
# finishes it once the event loop is done.

DATABASE_TIMEOUT_S = 5.0  # how long a write waits for another program's lock before it fails
DATABASE_STOP_WAIT_S = 1.0  # how long a stop signal in the midst of opening waits for the thread

DATABASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    batch_id            INTEGER PRIMARY KEY,
    started_at          TEXT NOT NULL,  -- ISO-8601, UTC
    finished_at         TEXT,           -- NULL while the batch runs
    state               TEXT NOT NULL,  -- running, completed or interrupted
    max_concurrent      INTEGER NOT NULL,
    delay               REAL NOT NULL,
    file_count          INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS file_results (
    batch_id            INTEGER NOT NULL REFERENCES batches,
    filename            TEXT NOT NULL,
    status              TEXT NOT NULL,  -- completed, error or cancelled
    total_transactions  INTEGER NOT NULL,
    total_amount        TEXT NOT NULL,  -- the exact sum as decimal text: a REAL would round it
    average_transaction REAL NOT NULL,
    top_category        TEXT,
    earliest_date       TEXT,
    latest_date         TEXT,
    processing_time     REAL NOT NULL,
    invalid_rows        INTEGER NOT NULL,
    error               TEXT,
    saved_at            TEXT NOT NULL,  -- ISO-8601, UTC
    PRIMARY KEY (batch_id, filename)
);
CREATE TABLE IF NOT EXISTS rejected_rows (  -- a file's row_errors: its first 100 rejected rows
    batch_id            INTEGER NOT NULL,
    filename            TEXT NOT NULL,
    line                INTEGER NOT NULL,
    reason              TEXT NOT NULL,
    FOREIGN KEY (batch_id, filename) REFERENCES file_results
);
"""


class DatabaseUnusable(Exception):
    """The --db path cannot be opened or written as a SQLite database."""


class BatchEnd(NamedTuple):
    """The writer thread's sentinel: no more results, and the batch's final state."""
    state: str  # "completed" or "interrupted"
    file_count: int  # the batch's files: a --watch session knows them only at its end


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def open_database(path: str, settings: Settings,
                  file_count: int) -> tuple["sqlite3.Connection", int]:
    """Open the database, create its tables if missing and add a running batch; return its id.

    Adding the batch is the first write, so a database that cannot be written fails here.
    """
    import sqlite3
    # sqlite3 says only "unable to open database file" for these two.
    folder = os.path.dirname(path) or "."
    if os.path.isdir(path):
        raise IsADirectoryError("it is a directory")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"there is no folder {folder}")
    connection = sqlite3.connect(path, timeout=DATABASE_TIMEOUT_S)
    try:
        # In WAL mode `sqlite3 results.db` can read while the batch writes: neither blocks the other.
        connection.execute("PRAGMA journal_mode = WAL")
        # The tables and the batch in one transaction: stopped at any point, this leaves the
        # database as it found it, or with both.
        connection.executescript("BEGIN IMMEDIATE;" + DATABASE_SCHEMA)
        batch_id = connection.execute(
            "INSERT INTO batches (started_at, state, max_concurrent, delay, file_count)"
            " VALUES (?, 'running', ?, ?, ?)",
            (utc_now(), settings.max_concurrent, settings.delay, file_count)).lastrowid
        connection.commit()
    except BaseException:
        connection.close()  # which rolls back what was begun
        raise
    assert batch_id is not None
    return connection, batch_id


def save_result(connection: "sqlite3.Connection", batch_id: int, result: FileResult) -> None:
    """Write one file's result and its listed rejected rows."""
    filename = readable_text(result["filename"])
    dates = result["date_range"]
    # One transaction: a reader sees the file whole or not at all, even if the program dies.
    with connection:
        connection.execute(
            "INSERT INTO file_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (batch_id, filename, result["status"], result["total_transactions"],
             result["total_amount_exact"], result["average_transaction"], result["top_category"],
             dates["earliest"], dates["latest"], result["processing_time"],
             result["invalid_rows"], result["error"], utc_now()))
        connection.executemany(
            "INSERT INTO rejected_rows VALUES (?, ?, ?, ?)",
            [(batch_id, filename, error["line"], error["reason"]) for error in result["row_errors"]])


def end_batch(connection: "sqlite3.Connection", batch_id: int, end: BatchEnd) -> None:
    with connection:
        connection.execute("UPDATE batches SET state = ?, file_count = ?, finished_at = ?"
                           " WHERE batch_id = ?", (*end, utc_now(), batch_id))


class DatabaseWriter:
    """Saves one batch's results to a SQLite database, from a thread of its own, as files finish."""

    def __init__(self, path: str, settings: Settings, filenames: list[str]) -> None:
        """Start the writer thread and wait until it has opened the database and added the batch;
        raise DatabaseUnusable, before any file is processed, if the path cannot be used."""
        self.path = path
        self.unsaved = dict.fromkeys(filenames)  # the batch's files with no result yet, in order
        self.saved = 0  # results handed to the thread
        self.cut_short = threading.Event()  # a stop signal came while the last were written
        self.finished = threading.Event()  # the thread has written all it will
        self.skipped = 0  # results left unwritten then
        self.stopped = False  # a second stop signal stopped the wait for the last writes
        self.inbox: queue.Queue[FileResult | BatchEnd] = queue.Queue()
        self.failures: list[str] = []  # one line per write that failed
        opened: Future[int] = Future()
        # A daemon thread never keeps the program from exiting; finish() waits for this one.
        self.thread = threading.Thread(target=self.write_batch, name="database writer",
                                       args=(opened, settings, len(filenames)), daemon=True)
        self.thread.start()
        try:
            self.batch_id = opened.result()
        except KeyboardInterrupt:
            # The thread may be waiting for another program's lock, so it is waited for only a
            # moment: enough, if it has just added the batch, to end it at once.
            self.inbox.put_nowait(BatchEnd("interrupted", 0))
            self.finished.wait(DATABASE_STOP_WAIT_S)
            raise

    def save(self, result: FileResult) -> None:
        """Hand a finished file's result to the writer thread; returns at once."""
        self.unsaved.pop(result["filename"], None)
        self.saved += 1
        self.inbox.put_nowait(result)

    def finish(self, *, interrupted: bool = False) -> bool:
        """Save the files with no result as cancelled, end the batch (interrupted if there were
        any, or if told so), and wait for the thread to write it all. A stop signal meanwhile
        has it leave the results still waiting and end the batch interrupted; a second one
        stops the wait, and then this returns False."""
        unfinished = list(self.unsaved)
        for name in unfinished:
            self.save(file_result(name, "cancelled"))
        self.inbox.put_nowait(BatchEnd("interrupted" if unfinished or interrupted else "completed",
                                       self.saved))
        # An Event, not thread.join(): on Python 3.11 a join that a signal interrupts can mark
        # the thread finished while it still runs, and the next join would not wait.
        try:
            self.finished.wait()
        except KeyboardInterrupt:
            self.cut_short.set()  # the write under way and the batch's end: a moment
            try:
                self.finished.wait()
            except KeyboardInterrupt:  # the report matters more than the last writes
                self.stopped = True
                return False
        return True

    def write_batch(self, opened: Future[int], settings: Settings, file_count: int) -> None:
        """The writer thread: open the database, then write what comes until the sentinel."""
        try:
            connection, batch_id = open_database(self.path, settings, file_count)
        except Exception as error:
            # Whatever stops the open, the caller waiting in __init__ must hear of it.
            opened.set_exception(
                DatabaseUnusable(f"cannot use {self.path} as a SQLite database: {error}"))
            return
        opened.set_result(batch_id)
        with closing(connection):
            while not isinstance(message := self.inbox.get(), BatchEnd):
                if self.cut_short.is_set():
                    self.skipped += 1
                    continue
                self.attempt(message["filename"],
                             functools.partial(save_result, connection, batch_id, message))
            if self.cut_short.is_set():
                message = message._replace(state="interrupted")
            self.attempt("the batch's final state",
                         functools.partial(end_batch, connection, batch_id, message))
        self.finished.set()

    def attempt(self, what: str, write: Callable[[], None]) -> None:
        """Run one write; if it fails, note what and why, and carry on."""
        try:
            write()
        except Exception as error:
            # Each write is its own transaction: one that fails leaves the others to be done.
            self.failures.append(f"{what}: {error}")

    def outcome(self) -> str:
        """Return one line for the user: where the batch was saved, or which writes failed."""
        if self.stopped:
            return (f"processor.py: stopped saving to {self.path} (batch {self.batch_id}) at a "
                    "stop signal: its last results may be missing, and the batch still reads "
                    "running")
        if self.failures:
            return (f"processor.py: could not save to {self.path} (batch {self.batch_id}): "
                    f"{plural(len(self.failures), 'write')} failed, the first: {self.failures[0]}")
        if self.skipped:
            return (f"processor.py: saved to {self.path} as batch {self.batch_id} in part: a "
                    f"stop signal came before {plural(self.skipped, 'result')} could be written, "
                    "and the batch reads interrupted")
        return f"Saved to {self.path} as batch {self.batch_id}"


# --- Keeping rejects ---

# The report lists a file's first rejected rows; --rejects DIR keeps every one of them, with its
# line and reason, in DIR/<name>.rejects.csv, for an analyst to repair and send back. It plugs in
# as process_batch's read_file, around process_file, which hands it each chunk's rejected rows:
# memory stays flat. They go to a temporary file, renamed once its input was read to its end:
# no final name ever holds half a file.

REJECTS_SUFFIX = ".rejects.csv"
# A spreadsheet runs a cell that starts with one of these as a formula, so a field in a client's
# file could make the analyst's spreadsheet fetch or run whatever it names.
FORMULA_STARTS = ("=", "@", "\t", "\r", "+", "-")


class RejectsUnusable(Exception):
    """The --rejects folder cannot be created or written."""


def rejects_names(filenames: list[str]) -> dict[str, str]:
    """Return each input's rejects file name: its own name without the extension, then
    .rejects.csv; an input whose name is taken (in any case) gets -2, -3... added, in order."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for filename in filenames:
        stem = "stdin" if filename == STDIN else split_extension(os.path.basename(filename))[0]
        name, number = stem, 1
        while name.casefold() in taken:  # casefold: x and X are one file on some disks
            number += 1
            name = f"{stem}-{number}"
        taken.add(name.casefold())
        names[filename] = name + REJECTS_SUFFIX
    return names


# The temporary files of this section: .NAME.rejects.csv.PID.tmp, and the probe of the folder.
TEMPORARY_NAME = re.compile(r"\.(?:.+\.rejects\.csv|write-test)\.([0-9]+)\.tmp")


def is_running(pid: int) -> bool:
    """Return whether a process with this number exists."""
    if pid <= 0:  # 0 would ask about this process's group
        return False
    try:
        os.kill(pid, 0)  # signal 0 sends nothing: it only asks whether the process is there
    except (ProcessLookupError, OverflowError):  # gone, or a number no process could have
        return False
    except PermissionError:  # there, but another user's
        return True
    return True


def remove_leftovers(folder: str) -> None:
    """Remove the temporary files that runs killed mid-file left in the folder: those whose
    process is gone, or has this one's number (a container's program is always process 1),
    since this run has written none yet. Another run still going keeps its own."""
    for name in os.listdir(folder):
        match = TEMPORARY_NAME.fullmatch(name)
        if match and (int(match[1]) == os.getpid() or not is_running(int(match[1]))):
            # Gone already (another run tidying up), or not ours to remove (a folder by that
            # name): either way, nothing that should stop this run.
            with suppress(OSError):
                os.remove(os.path.join(folder, name))


def prepare_rejects(folder: str, filenames: list[str]) -> dict[str, str]:
    """Create the folder if missing, remove what dead runs left in it, and return the path of
    each input's rejects file; raise RejectsUnusable unless a file can be written there."""
    probe = os.path.join(folder, f".write-test.{os.getpid()}.tmp")
    try:
        os.makedirs(folder, exist_ok=True)
        # Root may write anywhere, but a folder that nobody may write to was made read-only on
        # purpose; for everyone else, writing is the only sure test (a read-only disk, a quota).
        if os.stat(folder).st_mode & 0o222 == 0:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        with open(probe, "w"):
            pass
        os.remove(probe)
        remove_leftovers(folder)
    except FileExistsError:
        raise RejectsUnusable(f"cannot write rejected rows to {folder}: it is a file, "
                              "not a folder") from None
    except OSError as error:
        raise RejectsUnusable(f"cannot write rejected rows to {folder}: "
                              f"{error.strerror or error}") from None
    return {filename: os.path.join(folder, name)
            for filename, name in rejects_names(filenames).items()}


def spreadsheet_safe(value: str) -> str:
    """Return a field with a leading ' if a spreadsheet would run it as a formula; a number
    such as -3.00 is left as it is."""
    if value.startswith(FORMULA_STARTS) and not is_plain_decimal(value):
        return "'" + value
    return value


def write_safe_row(file: TextIO, cells: list[str]) -> None:
    """Write one CSV row, each cell made spreadsheet_safe."""
    csv.writer(file).writerow(map(spreadsheet_safe, cells))


class RejectsFile:
    """One input's rejected rows, written to a temporary file as they are handed over; keep()
    gives the file its final name, discard() removes what keep() did not name."""

    def __init__(self, path: str) -> None:
        self.path = path
        folder, name = os.path.split(path)
        # Hidden, and named after this process: two runs sharing a folder cannot collide.
        self.temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
        self.file: TextIO | None = None  # opened at the first rejected row: no rows, no file

    def write(self, header: tuple[str, ...], rows: list[RejectedRow]) -> None:
        """Add rejected rows (the first time, under a header); FileProblem if they cannot be."""
        if not rows:
            return
        try:
            if self.file is None:
                self.file = open(self.temporary, "w", encoding="utf-8", newline="")
                write_safe_row(self.file, ["line", "reason", *map(readable_text, header)])
            for row in rows:
                write_safe_row(self.file, [str(row.line), row.reason,
                                           *map(readable_text, row.fields)])
        except OSError as error:
            raise FileProblem(self.cannot_write(error)) from None

    def keep(self, result: FileResult) -> FileResult:
        """Once the input completed, give its rows their final name and return the result naming
        them; an error result if that fails. Any other result comes back unchanged."""
        if self.file is None or result["status"] != "completed":
            return result
        try:
            self.file.close()
            os.replace(self.temporary, self.path)
        except OSError as error:
            return file_result(result["filename"], "error", error=self.cannot_write(error),
                               seconds=result["processing_time"])
        self.file = None  # no temporary file left to remove
        return result | {"rejects_file": self.path}

    def discard(self) -> None:
        """Remove the temporary file, unless keep() named it."""
        if self.file is not None:
            with suppress(OSError):
                self.file.close()
            with suppress(OSError):
                os.remove(self.temporary)

    def cannot_write(self, error: OSError) -> str:
        return f"Cannot write its rejected rows to {self.path}: {error.strerror or error}"


def keep_rejects(folder: str | os.PathLike[str], filenames: list[str],
                 read_file: FileReader | None = None) -> FileReader:
    """Return a reader for process_batch that keeps each file's rejected rows in folder, around
    read_file (by default process_file, whose on_rejected it must take); raise RejectsUnusable,
    before any file is read, if the folder cannot be written."""
    paths = prepare_rejects(os.fspath(folder), filenames)
    # A partial of a function, not a closure: with --workers it is sent to a worker process.
    return functools.partial(read_keeping_rejects, paths, read_file)


async def read_keeping_rejects(paths: dict[str, str], read_file: FileReader | None,
                               filename: str, *, delay: float,
                               progress: FileProgress) -> FileResult:
    """Read a file with read_file, keeping its rejected rows in paths[filename]."""
    rejects = RejectsFile(paths[filename])
    try:
        result = await (read_file or process_file)(filename, delay=delay, progress=progress,
                                                   on_rejected=rejects.write)
        return rejects.keep(result)
    finally:
        # Here also when the file failed, or a Ctrl-C cancelled it at its await.
        rejects.discard()


# --- The dashboard ---

# --dashboard shows the batch full screen with curses: show_dashboard is the view that
# process_batch runs in place of the spinner and the monitor, and an EventLog, fed by the hooks,
# tells it what happened. Knowing is kept apart from drawing: take_snapshot copies what the batch
# knows into plain values, dashboard_lines turns those into lines (a pure function, tested
# without a terminal), and show_dashboard, a task like the spinner, draws them ten times a
# second. It never waits for a key: curses knows nothing of asyncio, so a getch() that blocked
# would freeze every file along with the screen.

DASHBOARD_INTERVAL_S = 0.1
DASHBOARD_EVENTS = 5  # the most recent events shown, when there is room
DASHBOARD_MIN_WIDTH = 72  # a file's name gets 18 columns, the rest of its line 54
FINISHED = ("completed", "error", "cancelled")


class BatchEvent(NamedTuple):
    at: float  # seconds from the batch's start
    text: str  # `finished a.csv (600 valid, 8 rejected)`, `error b.csv: ...`, `retry c.csv ...`


def describe_result(result: FileResult) -> str:
    """Return a result's event: `finished a.csv (600 valid, 8 rejected)`, `error b.csv: why`."""
    if result["status"] != "completed":
        return f"{result['status']} {result['filename']}: {result['error']}"
    return (f"finished {result['filename']} ({result['total_transactions']:,} valid, "
            f"{result['invalid_rows']:,} rejected)")


class EventLog:
    """The latest events (results, retries) for the dashboard; `echo`, if given, gets each too."""

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self.recent: deque[tuple[float, str]] = deque(maxlen=DASHBOARD_EVENTS)
        self.echo = echo

    def add(self, text: str) -> None:
        self.recent.append((time.perf_counter(), text))
        if self.echo is not None:
            self.echo(text)

    def add_result(self, result: FileResult) -> None:  # a ResultHook
        self.add(describe_result(result))

    def add_retry(self, filename: str, wait: float, error: str) -> None:  # a RetryHook
        self.add(f"retry {filename} in {wait:.1f} s: {error}")


class FileView(NamedTuple):
    """One file's line on the dashboard."""
    name: str
    status: str  # waiting, running, retry wait, or its result's status
    bytes_done: int
    size: int
    valid_rows: int
    rejected_rows: int
    seconds: float | None  # None while it waits


class DashboardState(NamedTuple):
    """All the dashboard shows, as plain values."""
    elapsed: float
    files: list[FileView]  # in the order they start: largest first
    slots: list[str | None]  # the file in each slot, None when free
    events: list[BatchEvent]  # the most recent, oldest first


def view_file(name: str, size: int, batch: Batch, now: float) -> FileView:
    """Return what the dashboard shows of one file at this moment."""
    result = batch.results.get(name)
    if result is not None:
        done = size if result["status"] == "completed" else 0
        return FileView(name, result["status"], done, size, result["total_transactions"],
                        result["invalid_rows"], result["processing_time"])
    if name not in batch.slots:
        return FileView(name, "retry wait" if name in batch.retrying else "waiting", 0, size, 0,
                        0, None)
    progress = batch.progress[name]  # made as the file took its slot
    return FileView(name, "running", progress.bytes_read, size, progress.tally.count,
                    progress.tally.invalid_rows, now - progress.started)


def take_snapshot(sizes: dict[str, int], batch: Batch, events: EventLog) -> DashboardState:
    """Return the batch's state now; sizes holds every file, in the order they start."""
    now = time.perf_counter()
    return DashboardState(now - batch.started,
                          [view_file(name, size, batch, now) for name, size in sizes.items()],
                          list(batch.slots),
                          [BatchEvent(at - batch.started, text) for at, text in events.recent])


def cut_left(text: str, width: int) -> str:
    """Return text padded to width, or begun with ... if it is wider: the end of a file's name
    tells it from the others."""
    return text.ljust(width) if len(text) <= width else "..." + text[len(text) - width + 3:]


def draw_bar(fraction: float, width: int) -> str:
    """Return a bar `[####......]` width columns wide, filled to fraction."""
    filled = int(fraction * (width - 2))  # full only when all is done
    return "[" + "#" * filled + "." * (width - 2 - filled) + "]"


def format_dashboard_header(state: DashboardState, width: int) -> list[str]:
    """Return the dashboard's first three lines: what runs, the batch's bar, and its pace."""
    sizes = sum(file.size for file in state.files)
    done = [file for file in state.files if file.status in FINISHED]
    bytes_done = sum(file.size if file.status in FINISHED else file.bytes_done
                     for file in state.files)
    fraction = bytes_done / sizes if sizes else len(done) / max(len(state.files), 1)
    percent = percent_done(fraction, len(done) == len(state.files))
    rows = sum(file.valid_rows + file.rejected_rows for file in state.files)
    rate = rows / state.elapsed if state.elapsed > 0 else 0.0
    time_left = ("done" if len(done) == len(state.files) else
                 format_time_left(estimate_seconds_left(state.elapsed, bytes_done, sizes)))
    return [
        cut(f"Processing {plural(len(state.files), 'file')}, up to {len(state.slots)} at a "
            "time (q or Ctrl-C to stop)", width),
        draw_bar(percent / 100, width - 5) + f" {percent:>3}%",
        cut(f"{len(done):,} of {len(state.files):,} files done | {state.elapsed:.1f} s | "
            f"{time_left} | {rate:,.0f} rows/s", width),
    ]


def first_file_shown(files: list[FileView], rows: int) -> int:
    """Return where the list of files starts in `rows` lines: at the top, scrolled just enough
    to show the last active file, but never past the first one."""
    active = [index for index, file in enumerate(files)
              if file.status in ("running", "retry wait")]
    active = active or [index for index, file in enumerate(files) if file.status not in FINISHED]
    active = active or [max(len(files) - 1, 0)]
    return min(active[0], max(0, active[-1] - rows + 1))


def format_file_line(file: FileView, name_width: int) -> str:
    """Return a file's line: name, status, a bar of the bytes read, rows so far, time."""
    seconds = "-" if file.seconds is None else f"{file.seconds:.1f} s"
    fraction = file.bytes_done / file.size if file.size else float(file.status == "completed")
    return (f"  {cut_left(file.name, name_width)} {file.status:<10} {draw_bar(fraction, 12)} "
            f"{file.valid_rows:>9,} {file.rejected_rows:>8,} {seconds:>8}")


def dashboard_lines(state: DashboardState, width: int, height: int) -> list[str]:
    """Return the lines of the batch's dashboard for a screen of width x height."""
    return lay_out_dashboard(format_dashboard_header(state, width), state, width, height)


def lay_out_dashboard(header: list[str], state: DashboardState, width: int,
                      height: int) -> list[str]:
    """Return the lines of a dashboard for a screen of width x height: the three lines of the
    header, the slots, as many files as fit, and the last few events; or, on a screen too small
    for that, one line that says so."""
    fixed = 3 + 1 + len(state.slots) + 1 + 1  # header, slots and their title, two more titles
    room = height - fixed
    if width < DASHBOARD_MIN_WIDTH or room < 2:
        return [cut(f"Terminal too small: {width}x{height}, the dashboard needs "
                    f"{DASHBOARD_MIN_WIDTH}x{fixed + 2}", width)]
    event_rows = min(max(len(state.events), 1), room // 2)  # the files get the other half or more
    file_rows = min(len(state.files), room - event_rows)
    top = first_file_shown(state.files, file_rows)
    name_width = width - 54
    number_width = len(str(len(state.slots)))
    slots = [f"  {number:>{number_width}}  "
             + cut_left(name or "(free)", width - 4 - number_width).rstrip()
             for number, name in enumerate(state.slots, start=1)]
    files_shown = f"Files {top + 1:,}-{top + file_rows:,} of {len(state.files):,}"
    files_title = (f"{files_shown:<{name_width + 2}}"
                   f" {'status':<10} {'read':<12} {'valid':>9} {'rejected':>8} {'time':>8}")
    events = [cut(f"  {event.at:6.1f} s  {event.text}", width) for event in state.events]
    return [
        *header,
        "Slots", *slots,
        files_title,
        *(format_file_line(file, name_width) for file in state.files[top:top + file_rows]),
        "Events", *(events[-event_rows:] or ["  (none yet)"]),
    ]


def draw_lines(screen: "curses.window", lines: list[str]) -> None:
    """Put the lines on the screen in place of what it showed."""
    import curses
    screen.erase()
    for row, line in enumerate(lines):
        # curses raises after writing a screen's last cell, or past its edge (a line of wide
        # characters): that may cost a character, never the batch. A name's bytes that are not
        # UTF-8 could not be drawn at all, hence readable_text.
        with suppress(curses.error):
            screen.addstr(row, 0, readable_text(line))
    screen.refresh()


def read_keys(screen: "curses.window") -> None:
    """Act on the keys pressed since the last frame: q stops the batch as Ctrl-C does."""
    # A resized terminal needs nothing here: getch() hands curses the news as KEY_RESIZE, curses
    # resizes the screen, and the next frame is drawn to the new size.
    while (key := screen.getch()) != -1:
        if key in (ord("q"), ord("Q")):
            # The very signal Ctrl-C sends, so the very same path: the batch is cancelled,
            # what finished is reported, and the exit status is 130.
            signal.raise_signal(signal.SIGINT)


async def draw_dashboard(screen: "curses.window", lines: Callable[[int, int], list[str]],
                         finished: Callable[[], bool]) -> None:
    """Draw lines(width, height) on screen about ten times a second, and return after the
    frame drawn once finished() is true. Pressing q stops the program as Ctrl-C does."""
    import curses
    screen.nodelay(True)  # getch() returns -1 at once when no key is waiting
    with suppress(curses.error):
        curses.curs_set(0)  # hide the cursor, on a terminal that can
    while True:
        read_keys(screen)
        height, width = screen.getmaxyx()
        draw_lines(screen, lines(width, height))
        if finished():
            return
        await asyncio.sleep(DASHBOARD_INTERVAL_S)


async def show_dashboard(screen: "curses.window", events: EventLog, batch: Batch) -> None:
    """Draw the batch on screen about ten times a second, and return after the frame in which
    every file has a result. Pressing q stops the batch as Ctrl-C does."""
    sizes = {name: file_size(name) for name in largest_first(batch.filenames)}
    snapshot = functools.partial(take_snapshot, sizes, batch, events)
    await draw_dashboard(screen, lambda width, height: dashboard_lines(snapshot(), width, height),
                         finished=lambda: all(name in batch.results for name in sizes))


# --- The timeline ---

# --timeline draws, after the report, what the semaphore did: one row per slot, time running
# left to right, each file's span in the slot it held. No row ever holds two files at once,
# and the dots are where a slot sat idle.

TIMELINE_RIGHT_MARGIN = 4  # room after the chart for the slots' closing | and the last second
TIMELINE_TICK_GAP = 10  # the fewest columns between two ticks of the time axis


class Span(NamedTuple):
    """The time one file held one slot, in seconds from the batch's start."""
    slot: int
    start: float
    end: float
    filename: str


def span_of(result: FileResult) -> Span | None:
    """Return the span of the file's last attempt, or None if it never held a slot."""
    slot, start, end = result["slot"], result["start_offset"], result["end_offset"]
    if slot is None or start is None or end is None:
        return None
    return Span(slot, start, end, result["filename"])


def legend_key(index: int) -> str:
    """Return the key of a file named in the legend: a, b, ... z, aa, ab, ..."""
    key = ""
    index += 1
    while index:
        index, letter = divmod(index - 1, 26)
        key = chr(ord("a") + letter) + key
    return key


def span_labels(spans: list[Span]) -> dict[Span, str]:
    """Return each span's label: its file's base name, or its whole name if two share it."""
    base_names = Counter(os.path.basename(span.filename) for span in spans)
    return {span: os.path.basename(span.filename)
            if base_names[os.path.basename(span.filename)] == 1 else span.filename
            for span in spans}


def span_columns(spans: list[Span], to_column: Callable[[float], int],
                 chart: int) -> dict[Span, tuple[int, int]]:
    """Return each span's first column and the column after its last, at least one column
    each but cut short where the next span in its slot begins."""
    columns = {}
    ordered = sorted(spans)  # by slot, then by start
    for span, after in zip(ordered, [*ordered[1:], None]):
        first = min(to_column(span.start), chart - 1)
        limit = chart if after is None or after.slot != span.slot else to_column(after.start)
        columns[span] = (first, min(max(to_column(span.end), first + 1), limit))
    return columns


def draw_span(width: int, text: str) -> str:
    """Return a span `width` columns wide, `[name====]`, with text in it if it fits."""
    if width >= len(text) + 2:
        return "[" + text.ljust(width - 2, "=") + "]"
    if width <= 1:
        return "|" * width  # a span cut to no columns at all is not drawn
    return "[" + "=" * (width - 2) + "]"


def tick_step(duration: float, chart: int) -> float:
    """Return the seconds between two ticks: 1, 2 or 5 times a power of ten, the smallest
    that leaves TIMELINE_TICK_GAP columns between ticks."""
    smallest = duration * TIMELINE_TICK_GAP / chart
    power = 10.0 ** math.floor(math.log10(smallest))
    return next(power * times for times in (1, 2, 5, 10) if power * times >= smallest * 0.999)


def format_axis(to_column: Callable[[float], int], duration: float, chart: int,
                indent: int, width: int) -> list[str]:
    """Return the axis under the slots: a + at each tick, then the seconds under the ticks
    (a last one that would pass the width left out)."""
    step = tick_step(duration, chart)
    ruler = ["-"] * (chart + 1)
    seconds = ""
    for number in range(math.floor(duration / step * 1.001) + 1):
        column = to_column(number * step)
        ruler[column] = "+"
        # Never as wide as TIMELINE_TICK_GAP: labels never touch. In ms for a batch that took
        # less than a hundredth of a second, where seconds would read 5e-05.
        label = (f"{number * step:.6g} s" if duration >= 0.01
                 else f"{number * step * 1000:.6g} ms")
        if indent + column + len(label) <= width:
            seconds = seconds.ljust(indent + column) + label
    return [" " * indent + "".join(ruler), seconds]


def format_seconds(seconds: float, spec: str = ".2f") -> str:
    """Return `1.25 s` (formatted by spec), or `0.42 ms` under a hundredth of a second, which
    `0.00 s` would hide."""
    return f"{seconds:{spec}} s" if seconds >= 0.01 else f"{seconds * 1000:.2g} ms"


def format_timeline(spans: list[Span], slot_count: int, width: int) -> list[str]:
    """Return the chart of the slots, at most `width` columns wide: a row per slot with the
    spans in it, a time axis, and a legend for each file whose name did not fit its span."""
    if not spans:
        return ["Timeline: no file finished, so there is nothing to draw."]
    indent = len(f"slot {slot_count} |")
    chart = max(width - indent - TIMELINE_RIGHT_MARGIN, TIMELINE_TICK_GAP)
    duration = max(max(span.end for span in spans), 1e-6)

    def to_column(seconds: float) -> int:
        return int(seconds * chart / duration + 1e-9)  # 1e-9: 0.3 * 10 must be 3, not 2

    columns = span_columns(spans, to_column, chart)
    labels = span_labels(spans)
    unlabelled = [span for span in sorted(spans)
                  if columns[span][1] - columns[span][0] < len(labels[span]) + 2]
    keys = {span: legend_key(index) for index, span in enumerate(unlabelled)}
    rows = []
    for slot in range(1, slot_count + 1):
        cells = ["."] * chart
        for span in (span for span in spans if span.slot == slot):
            first, end = columns[span]
            cells[first:end] = draw_span(end - first, keys.get(span, labels[span]))
        rows.append(f"slot {slot:>{indent - 7}} |" + "".join(cells) + "|")
    header = (f"Timeline: {plural(slot_count, 'slot')} over {format_seconds(duration)}, "
              f"a column every {format_seconds(duration / chart, '.2g')}, . where a slot sat idle")
    legend = [f"  {keys[span]} = {span.filename} (slot {span.slot}, {span.start:.2f} "
              f"to {span.end:.2f} s)" for span in unlabelled]
    return [header, *rows, *format_axis(to_column, duration, chart, indent, width), *legend]


def format_batch_timeline(batch: BatchResult, max_concurrent: int, width: int) -> str:
    """Return the timeline of a batch, from the slot and offsets in its results."""
    spans = [span for span in map(span_of, batch["results"].values()) if span is not None]
    return "\n".join(format_timeline(spans, min(max_concurrent, len(batch["results"])), width))


def timeline_width() -> int:
    """Return the columns the timeline may use: the terminal's width (or COLUMNS), or 80 off a
    terminal."""
    return terminal_width(sys.stdout) or UNKNOWN_WIDTH


# --- Watching a folder ---

# --watch DIR turns the program into a service: clients drop files into DIR/incoming, and each
# file moves through the folders of its life, always by os.rename, which on one file system
# either happens whole or not at all:
#
#     incoming/  --claim-->  processing/  --result recorded-->  done/ (completed) or failed/ (error)
#
# A file is claimed only once its size and modification time have stayed the same for --settle
# seconds, at two looks at least (--poll seconds apart): an upload still under way changes,
# and one that pauses for a moment (a slow network) must pause longer than that. An upload
# that is sure never to be seen half written is one written under a hidden name (.name.csv)
# and renamed to its own name once complete: the watcher takes no hidden file. A result goes to
# DIR/results.jsonl, forced to the disk, before its file leaves processing/; so whatever stops
# the program, no file has left processing/ without its result, and the next start puts back in
# incoming/ what is still there. A stop between the two steps has a file processed twice, but
# never loses a result. Each file goes through the coordinator's own process_with_retries, in a
# Batch whose hooks and view are the watcher's.

WATCH_LOCK_NAME = ".processor.lock"
WATCH_RESULTS_NAME = "results.jsonl"
WATCH_POLL_S = 1.0
WATCH_SETTLE_S = 5.0  # long enough for an upload's usual pauses: a stall of 3 s was seen
WATCH_RECENT_RESULTS = 20  # finished files the session keeps, for the dashboard

ClaimHook = Callable[[str], None]  # hears of each file claimed: its path in processing/


class WatchUnusable(Exception):
    """The --watch folder cannot be used: not creatable, or another watcher has it."""


class WatchFailed(Exception):
    """The watcher cannot go on: a result cannot be recorded, or a file cannot be moved."""


class WatchFolders(NamedTuple):
    """The paths of a watched folder's parts."""
    root: str
    incoming: str  # where clients drop files
    processing: str  # claimed files, being read
    done: str  # files whose status is completed
    failed: str  # files whose status is error
    results: str  # results.jsonl: one line per file, appended as each file finishes


def watch_folders(root: str) -> WatchFolders:
    """Return the paths of the folders and files inside root."""
    return WatchFolders(root, *(os.path.join(root, name) for name in
                                ("incoming", "processing", "done", "failed", WATCH_RESULTS_NAME)))


class Signature(NamedTuple):
    """What one look at a file sees: if this changes between two looks, it is being written."""
    size: int
    mtime_ns: int


def look_at_folder(folder: str) -> dict[str, Signature]:
    """Return the signature of each file in the folder that is to be processed."""
    signatures = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                # An upload is often written as .name.csv, name.csv.part, name.csv.tmp or
                # name.csv~ and renamed when complete: is_csv_name takes none of them.
                if not (is_csv_name(entry.name) and entry.is_file()):
                    continue
                with suppress(FileNotFoundError):  # gone since the folder was listed
                    stats = entry.stat()
                    signatures[entry.name] = Signature(stats.st_size, stats.st_mtime_ns)
    except OSError as error:
        raise WatchFailed(f"cannot look in {folder}: {error.strerror or error}") from None
    return signatures


class Sighting(NamedTuple):
    """How a file looks, and since when (on the event loop's clock) it has looked so."""
    signature: Signature
    since: float


def update_sightings(seen: dict[str, Sighting], now: dict[str, Signature],
                     at: float) -> dict[str, Sighting]:
    """Return the files of the look made at `at`, each since when it has looked the same."""
    return {name: seen[name] if name in seen and seen[name].signature == signature
            else Sighting(signature, at) for name, signature in now.items()}


def settled_names(seen: dict[str, Sighting], at: float, settle: float) -> list[str]:
    """Return the names that have looked the same for `settle` seconds, and at two looks at
    least, oldest first."""
    settled = [name for name, sighting in seen.items()
               if sighting.since < at and at - sighting.since >= settle]
    return sorted(settled, key=lambda name: (seen[name].signature.mtime_ns, name))


def free_path(folder: str, name: str) -> str:
    """Return folder/name, or the first of folder/stem-2.ext, stem-3.ext... that is free."""
    stem, extension = split_extension(name)
    path, number = os.path.join(folder, name), 1
    while os.path.lexists(path):
        number += 1
        path = os.path.join(folder, f"{stem}-{number}{extension}")
    return path


def move_to(path: str, folder: str) -> str:
    """Move a file into folder under a name no other file there has; return its new path."""
    destination = free_path(folder, os.path.basename(path))
    os.rename(path, destination)
    return destination


def claim(name: str, folders: WatchFolders) -> str | None:
    """Move incoming/name to processing/ and return its new path; None if it has gone, or if
    a file of the same name is still in processing/."""
    destination = os.path.join(folders.processing, name)
    # One watcher per folder, so nobody else puts files in processing/: what this sees stays true.
    if os.path.lexists(destination):
        return None
    try:
        os.rename(os.path.join(folders.incoming, name), destination)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise WatchFailed(f"cannot claim {name}: {error.strerror or error}") from None
    return destination


def lock_folder(root: str) -> int:
    """Lock the folder for this process and return the lock file's descriptor; raise
    WatchUnusable if another process holds the lock.

    The lock lasts while the descriptor is open, and the OS drops it when the process ends,
    however it ends: a kill -9 leaves no stale lock behind.
    """
    import fcntl
    descriptor = os.open(os.path.join(root, WATCH_LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # NB: fail at once, never wait
    except BlockingIOError:
        holder = os.read(descriptor, 20).decode("ascii", "replace").strip()
        os.close(descriptor)
        raise WatchUnusable(f"{root} is already being watched (by process {holder or '?'}); "
                            "only one watcher per folder") from None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())  # for the message above
    return descriptor


def prepare_parts(folders: WatchFolders) -> None:
    """Create the subfolders and the results file if missing; raise WatchUnusable if they
    cannot be used."""
    subfolders = (folders.incoming, folders.processing, folders.done, folders.failed)
    try:
        for folder in subfolders:
            os.makedirs(folder, exist_ok=True)
        # A rename is atomic only within one file system; across two it fails (or, done by
        # hand, copies), so a claim could not be one step.
        if len({os.stat(folder).st_dev for folder in subfolders}) > 1:
            raise WatchUnusable(f"cannot watch {folders.root}: its folders are on different "
                                "file systems")
        open(folders.results, "a").close()  # a results file that cannot be written fails here
    except OSError as error:
        raise WatchUnusable(f"cannot watch {folders.root}: {error.strerror or error}") from None


def open_watch_folder(root: str) -> tuple[WatchFolders, int]:
    """Create the folder and its parts if missing, lock it, and return its paths and the
    lock's descriptor; raise WatchUnusable if that cannot be done."""
    folders = watch_folders(root)
    try:
        os.makedirs(root, exist_ok=True)
        lock = lock_folder(root)
    except (FileExistsError, NotADirectoryError):
        raise WatchUnusable(f"cannot watch {root}: it is a file, not a folder") from None
    except OSError as error:
        raise WatchUnusable(f"cannot watch {root}: {error.strerror or error}") from None
    try:
        prepare_parts(folders)  # under the lock: another watcher may be using them
    except WatchUnusable:
        os.close(lock)
        raise
    return folders, lock


def recover_files(folders: WatchFolders) -> list[str]:
    """Move every file left in processing/ back to incoming/ and return their new paths;
    raise WatchFailed if one cannot be moved."""
    try:
        with os.scandir(folders.processing) as entries:
            left = sorted(entry.path for entry in entries if not entry.is_dir())
        return [move_to(path, folders.incoming) for path in left]
    except OSError as error:
        raise WatchFailed(f"cannot move the files left in {folders.processing} back to "
                          f"{folders.incoming}: {error.strerror or error}") from None


def cut_torn_line(path: str) -> bool:
    """If the file ends inside a line, cut that line off; return whether it did.

    Each line is forced to the disk before its file moves on, so a torn last line (a power
    cut while writing it) belongs to a file still in processing/, which will be done again.
    """
    try:
        file = open(path, "rb+")
    except FileNotFoundError:
        return False
    with file:
        end = file.seek(0, os.SEEK_END)
        keep = end
        while keep > 0:  # back from the end, a block at a time, to the last line break
            start = max(keep - 65536, 0)
            file.seek(start)
            newline = file.read(keep - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            keep = start
        if keep == end:
            return False
        file.truncate(keep)
    return True


@dataclass
class WatchSession:
    """What one --watch session has done so far, for the status line, dashboard and summary."""
    folders: WatchFolders
    started: float = field(default_factory=time.perf_counter)
    done: int = 0
    failed: int = 0
    waiting: int = 0  # files in incoming/ not claimed yet
    processing: set[str] = field(default_factory=set)  # the claimed files' paths
    put_back: list[str] = field(default_factory=list)  # files Ctrl-C sent back to incoming/


def file_sha256(path: str) -> str | None:
    """Return the SHA-256 of the file's bytes in hex, or None if it cannot be read."""
    import hashlib
    try:
        with open(path, "rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()
    except OSError:
        return None


def results_line(result: FileResult, sha256: str | None, finished_at: str) -> str:
    """Return a file's line of results.jsonl: its result, when it finished, and the SHA-256
    of its bytes, by which a reader can tell a file that was recorded twice."""
    return strict_json({**result, "finished_at": finished_at, "sha256": sha256}) + "\n"


def append_durably(path: str, line: str) -> None:
    """Append the line to the file, and return once it is on the disk."""
    with open(path, "a", encoding="utf-8") as file:
        file.write(line)
        file.flush()  # from Python's buffer to the OS,
        os.fsync(file.fileno())  # and from the OS's cache to the disk


def record_result(path: str, result: FileResult, sha256: str | None,
                  folders: WatchFolders) -> FileResult:
    """Append the result, named after where its file goes, to results.jsonl, then move the file
    to done/ or failed/; return that result. Raise WatchFailed if either step fails."""
    folder = folders.done if result["status"] == "completed" else folders.failed
    result = result | {"filename": free_path(folder, os.path.basename(path))}
    try:
        append_durably(folders.results, results_line(result, sha256, utc_now()))
        os.rename(path, result["filename"])
    except OSError as error:
        raise WatchFailed(f"cannot record the result of {path}: "
                          f"{error.strerror or error}") from None
    return result


def put_back(path: str, session: WatchSession) -> None:
    """Move a claimed file back to incoming/, or say why it stays in processing/."""
    session.processing.discard(path)
    try:
        session.put_back.append(move_to(path, session.folders.incoming))
    except OSError as error:
        status_line.print(f"processor.py: cannot put {path} back in incoming/ "
                          f"({error.strerror or error}); the next start will")


def keep_recent(batch: Batch, result: FileResult) -> None:
    """Add the result to the batch, and keep only the latest few: a session may run for months."""
    batch.results[result["filename"]] = result
    for name in list(batch.results)[:-WATCH_RECENT_RESULTS]:
        del batch.results[name]


async def process_and_record(path: str, batch: Batch, session: WatchSession) -> None:
    """Process a claimed file, record its result, and move it to done/ or failed/."""
    result = await process_with_retries(path, batch)
    sha256 = await asyncio.to_thread(file_sha256, path)  # a whole read: off the loop
    # No await from here on, so nothing else runs until the file has moved: no other file can
    # take the name chosen for it in done/ or failed/, and Ctrl-C cannot stop it half-way.
    result = record_result(path, result, sha256, session.folders)
    session.processing.discard(path)
    if result["status"] == "completed":
        session.done += 1
    else:
        session.failed += 1
    batch.on_result(result)
    keep_recent(batch, result)


async def process_claimed(path: str, batch: Batch, session: WatchSession,
                          room: asyncio.Event) -> None:
    """Process a claimed file to its end, then tell the watcher there is room for another."""
    try:
        await process_and_record(path, batch, session)
    finally:
        batch.progress.pop(path, None)  # it too keeps only the files in progress
        room.set()


async def claim_arrivals(session: WatchSession, batch: Batch, files: asyncio.TaskGroup,
                         poll: float, settle: float, room: asyncio.Event,
                         on_claim: ClaimHook) -> None:
    """Look in incoming/ every `poll` seconds, forever, and start each file found complete
    (unchanged for `settle` seconds) as soon as there is room for it: fewer files at work than
    max_concurrent."""
    loop = asyncio.get_running_loop()
    seen: dict[str, Sighting] = {}
    ready: list[str] = []
    next_look = loop.time()
    while True:
        if loop.time() >= next_look:
            looked_at = loop.time()
            seen = update_sightings(seen, look_at_folder(session.folders.incoming), looked_at)
            ready = settled_names(seen, looked_at, settle)
            next_look = loop.time() + poll
        room.clear()
        # A file waiting to retry stays in processing/, but as in a batch it holds no slot: it
        # must not keep another file from starting.
        while ready and len(session.processing - batch.retrying) < batch.settings.max_concurrent:
            name = ready.pop(0)
            path = claim(name, session.folders)
            if path is not None:
                del seen[name]  # a new file of this name must settle, too
                session.processing.add(path)
                on_claim(path)
                files.create_task(process_claimed(path, batch, session, room))
        session.waiting = len(seen)
        # Wait for the next look, or for room (a file left, or waits to retry): a file found
        # complete then need not wait up to a whole --poll for it.
        with suppress(TimeoutError):
            async with asyncio.timeout_at(next_look):
                await room.wait()


def format_watch_status(session: WatchSession) -> str:
    """Return the status line: `watching inbox: 12 done, 1 failed, 2 processing, 3 waiting`."""
    return (f"watching {session.folders.root}: {session.done:,} done, {session.failed:,} failed, "
            f"{len(session.processing):,} processing, {session.waiting:,} waiting")


async def show_watch_status(session: WatchSession) -> None:
    """Until cancelled: on a terminal, spin before the status line; elsewhere (a log), print
    it every 2 seconds."""
    if sys.stderr.isatty():
        await spin(lambda: format_watch_status(session))
    else:
        while True:
            await asyncio.sleep(MONITOR_INTERVAL_S)
            status_line.print(format_watch_status(session))


def format_watch_header(session: WatchSession, elapsed: float, width: int) -> list[str]:
    """Return the three lines over the watch's dashboard: what it watches, the counts, the time."""
    return [
        cut(f"Watching {session.folders.incoming} (q or Ctrl-C to stop)", width),
        cut(format_watch_status(session), width),
        cut(f"up {elapsed:.1f} s | results in {session.folders.results}", width),
    ]


def watched_files(session: WatchSession, batch: Batch) -> dict[str, int]:
    """Return the files the watch's dashboard lists, with their sizes: those in processing/,
    then the latest to finish, the newest first."""
    names = [*sorted(session.processing), *reversed(batch.results)]
    return {name: file_size(name) for name in names}


async def show_watch_dashboard(screen: "curses.window", session: WatchSession, events: EventLog,
                               batch: Batch) -> None:
    """Draw the watch on screen about ten times a second until cancelled."""
    def lines(width: int, height: int) -> list[str]:
        state = take_snapshot(watched_files(session, batch), batch, events)
        return lay_out_dashboard(format_watch_header(session, state.elapsed, width), state,
                                 width, height)

    await draw_dashboard(screen, lines, finished=lambda: False)


async def watch_folder(session: WatchSession, settings: Settings, *, poll: float = WATCH_POLL_S,
                       settle: float = WATCH_SETTLE_S, read_file: FileReader | None = None,
                       on_claim: ClaimHook = ignore, on_result: ResultHook = ignore,
                       on_retry: RetryHook = ignore, view: View | None = None,
                       alongside: Collection[View] = ()) -> None:
    """Process each complete file that arrives in the session's incoming/, until cancelled: a
    file is complete once unchanged for `settle` seconds, looked at every `poll` seconds.

    At most max_concurrent files are processed at any moment. Cancelled (Ctrl-C), it moves the
    files it was processing back to incoming/. Raises WatchFailed, having done the same, if a
    result cannot be recorded or a file cannot be moved. The hooks and the view plug in as in
    process_batch, and `on_claim` hears of each file claimed; without a view, the status line
    is shown. The views `alongside` run beside it, and stop with it.
    """
    room = asyncio.Event()  # set when a file leaves processing/ or starts waiting to retry

    def retrying(filename: str, wait: float, error: str) -> None:
        on_retry(filename, wait, error)
        room.set()

    batch = Batch(filenames=[], settings=settings,
                  semaphore=asyncio.Semaphore(settings.max_concurrent),
                  slots=[None] * settings.max_concurrent, read_file=read_file,
                  on_result=on_result, on_retry=retrying)
    status: View = view or (lambda batch: show_watch_status(session))
    shows = [asyncio.create_task(show(batch)) for show in (status, *alongside)]
    try:
        # A TaskGroup here, not gather as in a batch: a result that cannot be recorded stops
        # the session, and the group then cancels every other file, which goes back to incoming/.
        async with asyncio.TaskGroup() as files:
            await claim_arrivals(session, batch, files, poll, settle, room, on_claim)
    except* WatchFailed as failures:
        raise failures.exceptions[0] from None
    finally:
        # Here after Ctrl-C or a failure, once every file's task has ended, the files still in
        # processing/ go back to wait their turn: none has a result yet (or, if moving it on
        # failed, one that it may get twice, never none). This is done here, not in each task,
        # because a task cancelled before it began never runs a line of its own.
        for path in sorted(session.processing):
            put_back(path, session)
        for show in shows:
            show.cancel()
        await asyncio.gather(*shows, return_exceptions=True)


def format_watch_summary(session: WatchSession, elapsed: float, width: int) -> str:
    """Return what the session did, printed when it stops; its list of names fits in width."""
    lines = [f"Stopped watching {session.folders.root} after {elapsed:.1f} s: "
             f"{plural(session.done + session.failed, 'file')} processed "
             f"({session.done:,} done, {session.failed:,} failed)"]
    if session.put_back:
        label = "Put back in incoming/, to be processed next time: "
        names = [os.path.basename(path) for path in session.put_back]
        lines.append(label + list_names(names, width - len(label)))
    lines.append(f"Results: {session.folders.results}")
    return "\n".join(lines)


# --- An HTTP server ---

# What --serve needs of HTTP/1.1, and no more, on asyncio.start_server: a task for each
# connection reads one request, answers it and ends the connection (Connection: close, so no
# request ever follows another on it); an event stream is an answer that goes on. Each task
# spends its life awaiting its client, so a hundred slow clients cost the loop only the moments
# it takes to answer them: one thread, many waits, the lesson once more. Whatever a client sends,
# or fails to send, ends its own connection and no other.

SERVE_DEFAULT_HOST = "127.0.0.1"
SERVE_MAX_HEAD = 8192  # bytes of request line and headers; a longer head gets 431
SERVE_MAX_CONNECTIONS = 100  # at once; one more gets 503
SERVE_TIMEOUT_S = 10.0  # a client silent this long (or not reading) is dropped
SERVE_HEARTBEAT_S = 15.0  # a comment on a quiet event stream, so that proxies keep it open
SERVE_STREAM_BACKLOG = 100  # events a stream's client may fall behind by, before it is dropped
READ_BYTES = 65536  # what is read of a request's body at a time
HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # what a header's name may be made of


class ServeUnusable(Exception):
    """--serve's address cannot be listened on."""


class HttpError(Exception):
    """A request that gets an error response: its status, and a one-line reason."""

    def __init__(self, status: int, reason: str, headers: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.headers = headers


class Request(NamedTuple):
    method: str
    path: str  # as sent, %-escapes and all, without the query
    query: dict[str, str]  # the last value of each name
    headers: dict[str, str]  # names in lower case


def parse_address(text: str) -> tuple[str, int]:
    """Return the host and port of `[HOST:]PORT` (an IPv6 host in brackets); raise ValueError."""
    host, colon, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host if colon else SERVE_DEFAULT_HOST
    # An IPv6 host's colons would be taken for the port's: it comes in brackets, [::1]:8080.
    if (not port.isascii() or not port.isdigit() or int(port) > 65535 or not host
            or any(character in host for character in "[]") or (":" in host) != bracketed):
        raise ValueError(f"not [HOST:]PORT: {text!r}")
    return host, int(port)


def listen_on(host: str, port: int) -> "socket.socket":
    """Return a socket listening on host:port (port 0: any free one); raise ServeUnusable."""
    import socket
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=SERVE_MAX_CONNECTIONS)
    except OSError as error:
        # create_server adds the address to the system's reason, which the message has already.
        reason = (os.strerror(error.errno) if error.errno is not None and error.errno > 0
                  else error.strerror or error)
        raise ServeUnusable(f"cannot serve on {host_and_port(host, port)}: {reason}") from None


def is_loopback(listening: "socket.socket") -> bool:
    """Return whether only this machine can reach the socket."""
    import ipaddress
    return ipaddress.ip_address(listening.getsockname()[0]).is_loopback


def host_and_port(host: str, port: int) -> str:
    """Return HOST:PORT, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def address_url(listening: "socket.socket") -> str:
    """Return the http:// address the socket is reached at."""
    return f"http://{host_and_port(*listening.getsockname()[:2])}/"


def parse_head(head: bytes) -> Request:
    """Return the request a head (request line and headers, up to the blank line) makes; raise
    HttpError 400 for one that is not HTTP/1.x."""
    from urllib.parse import parse_qsl
    request_line, *header_lines = head.decode("latin-1").removesuffix("\r\n\r\n").split("\r\n")
    parts = request_line.split(" ")
    if (len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1")
            or not parts[1].startswith("/") or not parts[1].isascii()):
        raise HttpError(400, "not an HTTP/1.x request line")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, colon, value = line.partition(":")
        if not colon or not HTTP_TOKEN.fullmatch(name):
            raise HttpError(400, "a header line without a name")
        name, value = name.lower(), value.strip()
        # Two lengths that differ could make the body end where the client did not mean it to.
        if name == "content-length" and headers.get(name, value) != value:
            raise HttpError(400, "two different Content-Lengths")
        headers[name] = value
    path, _, query = parts[1].partition("?")
    return Request(parts[0], path, dict(parse_qsl(query)), headers)


async def read_request(reader: asyncio.StreamReader) -> Request:
    """Read a request's head; raise HttpError (400, 408, 431), or IncompleteReadError for a
    client that closed first."""
    try:
        async with asyncio.timeout(SERVE_TIMEOUT_S):
            head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:  # the stream's limit is SERVE_MAX_HEAD
        raise HttpError(431, f"request line and headers over {SERVE_MAX_HEAD:,} bytes") from None
    except TimeoutError:
        raise HttpError(408, f"no whole request in {SERVE_TIMEOUT_S:g} s") from None
    return parse_head(head)


def http_response(status: int, body: bytes, content_type: str,
                  headers: Iterable[str] = ()) -> bytes:
    """Return a whole response, its head and body."""
    from http import HTTPStatus
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}", "Cache-Control: no-store", "Connection: close",
            *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def json_response(value: object, status: int = 200, headers: Iterable[str] = ()) -> bytes:
    return http_response(status, (strict_json(value, indent=2) + "\n").encode(),
                         "application/json", headers)


def error_response(error: HttpError) -> bytes:
    return json_response({"error": str(error)}, error.status, error.headers)


def event_message(kind: str, data: object, number: int) -> bytes:
    """Return one event of a text/event-stream: its number, its kind and its data as JSON."""
    return f"id: {number}\nevent: {kind}\ndata: {strict_json(data)}\n\n".encode()


def whole_number_in(query: dict[str, str], name: str, default: int, smallest: int,
                    largest: int) -> int:
    """Return the query's value of name, a whole number from smallest to largest; raise
    HttpError 400."""
    text = query.get(name, str(default))
    if not text.isascii() or not text.isdigit() or not smallest <= int(text) <= largest:
        raise HttpError(400, f"{name} must be a whole number from {smallest} to {largest}")
    return int(text)


def name_in(path: str, prefix: str) -> str:
    """Return the name that follows prefix in the path, its %-escapes decoded."""
    from urllib.parse import unquote
    try:
        return unquote(path.removeprefix(prefix), errors="strict")
    except UnicodeDecodeError:
        raise HttpError(400, "a name's %-escapes must be UTF-8") from None


def require_method(request: Request, method: str) -> None:
    """Raise HttpError 405 unless the request uses the method."""
    if request.method != method:
        raise HttpError(405, f"{request.path} takes {method} only", (f"Allow: {method}",))


async def until_end_of_file(reader: asyncio.StreamReader) -> None:
    """Read, and throw away, what the client sends until it closes its side."""
    while await reader.read(READ_BYTES):
        pass


async def linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """After the response, say so (end of file) and read what the client still sends, until it
    closes; return whether it did within SERVE_TIMEOUT_S, having taken the whole response.

    Closing at once, with a request's body unread, would make the system reset the connection,
    and the client might lose the response it had not read yet: a 413, say.
    """
    if writer.can_write_eof():
        writer.write_eof()
    with suppress(TimeoutError):
        async with asyncio.timeout(SERVE_TIMEOUT_S):
            await until_end_of_file(reader)
            return True
    return False


# How a server answers a request: it writes the response, or raises HttpError for one.
Answer = Callable[[Request, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class HttpServer:
    """Serves each connection to a listening socket with `answer`, and sends events to the
    clients of its event streams."""

    def __init__(self, listening: "socket.socket", answer: Answer) -> None:
        self.listening = listening
        self.answer = answer
        self.handlers: set[asyncio.Task[None]] = set()  # a task for each connection
        # The events waiting to be sent to each stream's client, and its connection's task.
        self.streams: dict[asyncio.Queue[bytes], asyncio.Task[None]] = {}
        self.events_sent = 0
        self.last_sent = time.monotonic()
        self.closing = False

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """Serve while the block runs; then close every connection, and return once each
        connection's task has ended."""
        # The stream's limit caps the head that readuntil will gather (431 beyond it).
        server = await asyncio.start_server(self.handle, sock=self.listening,
                                            limit=SERVE_MAX_HEAD)
        heartbeat = asyncio.create_task(self.keep_streams_open())
        try:
            yield
        finally:
            heartbeat.cancel()
            # Closing the server only stops it accepting: the connections' tasks go on. On
            # Python 3.11, one still running as the loop closes is cancelled there, and can log
            # a traceback; so they are cancelled, and awaited, here.
            self.closing = True
            server.close()
            while self.handlers:
                for task in self.handlers:
                    task.cancel()
                await asyncio.gather(*self.handlers, return_exceptions=True)
            await asyncio.gather(heartbeat, return_exceptions=True)
            await server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one connection's request, whatever it sends; then close it."""
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        closed_by_client = False
        asked = "a request"
        try:
            if self.closing:  # it began as the server was closing
                return
            try:
                if len(self.handlers) > SERVE_MAX_CONNECTIONS:
                    raise HttpError(503, "too many connections; try again soon",
                                    ("Retry-After: 1",))
                request = await read_request(reader)
                asked = f"{request.method} {request.path}"
                await self.answer(request, reader, writer)
            except HttpError as error:
                writer.write(error_response(error))
            except (OSError, asyncio.IncompleteReadError):
                raise  # the connection's own trouble, below
            except Exception as error:
                # A bug in an answer must not take the server down, nor go unseen.
                status_line.print(f"processor.py: unexpected {type(error).__name__} answering "
                                  f"{asked}: {error}")
                writer.write(error_response(HttpError(500, f"unexpected {type(error).__name__}")))
            closed_by_client = await linger(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client went (a reset, a timeout): nothing to tell it
        except asyncio.CancelledError:
            # The one place a cancel is not passed on. Cancelled at shutdown, or dropped as too
            # slow an event stream, the handler is the whole of its task, which ends anyway; but
            # on Python 3.11 asyncio asks a handler's task for its exception as it ends, which
            # raises for a cancelled one, and is logged.
            pass
        finally:
            self.handlers.discard(task)
            if closed_by_client:
                writer.close()
            else:  # whatever it has not taken is thrown away
                writer.transport.abort()

    async def stream_events(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        """Send each event as it comes, until the client goes or falls too far behind."""
        task = asyncio.current_task()
        assert task is not None
        waiting_events: asyncio.Queue[bytes] = asyncio.Queue(SERVE_STREAM_BACKLOG)
        self.streams[waiting_events] = task
        # A client that goes sends an end of file: heard now, it frees its connection at once,
        # rather than at the next event written to it.
        def client_gone(reading: "asyncio.Task[None]") -> None:
            if not reading.cancelled():  # cancelled: the stream ended first
                reading.exception()  # a reset ends it too; taken here, so not logged as lost
                task.cancel()

        reading_to_end = asyncio.create_task(until_end_of_file(reader))
        reading_to_end.add_done_callback(client_gone)
        head = ("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n"
                "X-Accel-Buffering: no\r\n\r\n")  # nginx, as a proxy: pass each event at once
        writer.write(head.encode() + b"retry: 2000\n: connected\n\n")  # retry: reconnect wait, ms
        try:
            while True:
                # A client that stops reading fills its socket's buffer, and drain waits; the
                # queue then fills, and send drops it: neither grows without bound.
                async with asyncio.timeout(SERVE_TIMEOUT_S):
                    await writer.drain()
                writer.write(await waiting_events.get())
        finally:
            self.streams.pop(waiting_events, None)
            reading_to_end.cancel()

    def send(self, kind: str, data: object) -> None:
        """Queue an event for every stream's client; drop a client too far behind to take it."""
        self.events_sent += 1
        self.write_to_streams(event_message(kind, data, self.events_sent))

    def write_to_streams(self, message: bytes) -> None:
        self.last_sent = time.monotonic()
        for waiting_events, task in list(self.streams.items()):
            try:
                waiting_events.put_nowait(message)
            except asyncio.QueueFull:
                del self.streams[waiting_events]
                task.cancel()

    async def keep_streams_open(self) -> None:
        """Until cancelled: a comment line on the event streams whenever nothing was sent for
        SERVE_HEARTBEAT_S, so that a proxy does not close them as idle."""
        while True:
            await asyncio.sleep(self.last_sent + SERVE_HEARTBEAT_S - time.monotonic())
            if time.monotonic() - self.last_sent >= SERVE_HEARTBEAT_S:
                self.write_to_streams(b": heartbeat\n\n")


# --- Serving a watch ---

# --serve [HOST:]PORT shows the watcher to a browser, and takes files from clients, with no seat
# at its terminal. Its server is a view that runs alongside the status line, in the watcher's
# event loop; it hears of the watcher through its hooks (a file claimed, finished, waiting to
# retry), reads the rest from the session and the batch, and reads the history from
# results.jsonl. The watcher knows nothing of it.
#
#     GET /               the live page                GET /files?status=&limit=&offset=
#     GET /stats          the watcher's state, JSON    GET /files/NAME   one file's result
#     GET /events         a stream of what happens     GET /errors       the latest failures
#     PUT /incoming/NAME  upload a file                GET /healthz      ok, while it runs

SERVE_TOKEN_VARIABLE = "PROCESSOR_UPLOAD_TOKEN"  # uploads are off unless it is set
SERVE_PROGRESS_S = 1.0  # between two progress events, while files are in progress
SERVE_RECENT = 10  # results and errors the page and /errors show
SERVE_PAGE_SIZE = 20  # /files' default limit
SERVE_MAX_PAGE = 100  # and the largest it takes
DEFAULT_MAX_UPLOAD = 100_000_000
UPLOAD_SUFFIX = ".upload"  # an upload under way is incoming/.NAME.RANDOM.upload: hidden
HISTORY_BLOCK = 65536  # results.jsonl is read from its end, this many bytes at a time
UPLOAD_NAME_BYTES = 200  # so that the temporary name, 21 bytes longer, is a name a system takes
SERVE_MIN_UPLOAD_RATE = 16384  # bytes a second; an upload slower than this on the whole is dropped


def upload_name_problem(name: str) -> str | None:
    """Return why a name cannot be uploaded to (None if it can): it must be a plain file name
    that the watcher takes."""
    import unicodedata
    if "/" in name or "\\" in name:
        return "a file name, not a path"
    if name.startswith("."):
        return "a name that starts with a dot is hidden, or a way out of the folder"
    # Control and format characters (a line break, a right-to-left override) would let a name
    # pass for another in the logs.
    if any(unicodedata.category(character) in ("Cc", "Cf", "Zl", "Zp") for character in name):
        return "a name with a control or format character"
    if len(name.encode()) > UPLOAD_NAME_BYTES:
        return f"a name over {UPLOAD_NAME_BYTES} bytes"
    if not is_csv_name(name):
        return "a name that ends .csv or .csv.gz"
    return None


def lines_from_end(path: str) -> Iterator[bytes]:
    """Yield the file's lines, the last first, reading a block at a time from its end."""
    with open(path, "rb") as file:
        end = file.seek(0, os.SEEK_END)
        tail = b""
        while end > 0:
            start = max(end - HISTORY_BLOCK, 0)
            file.seek(start)
            lines = (file.read(end - start) + tail).split(b"\n")
            tail = lines.pop(0)  # may be the end of a line that starts in the block before
            yield from reversed([line for line in lines if line])
            end = start
        if tail:
            yield tail


def history(path: str, *, status: str | None = None, name: str | None = None, limit: int,
            offset: int = 0) -> list[dict[str, Any]]:
    """Return up to `limit` results from results.jsonl, the newest first, after skipping
    `offset` of them; only those of the status, or of the file name (in done/ or failed/), if
    given. It reads from the end, only as far back as it must."""
    found: list[dict[str, Any]] = []
    # JSON writes a name as its plain characters (with an escape for a quote, a backslash or a
    # character past ASCII): a line without these bytes is not that file's, and costs no parse.
    wanted = b"" if name is None else json.dumps(name)[1:-1].encode()
    with suppress(FileNotFoundError):  # removed by hand: no history
        for line in lines_from_end(path):
            if wanted not in line:
                continue
            with suppress(ValueError):  # a line being written, or not JSON (edited by hand)
                result = json.loads(line)
                if (is_result(result) and (status is None or result["status"] == status)
                        and (name is None or os.path.basename(result["filename"]) == name)):
                    if offset:
                        offset -= 1
                        continue
                    found.append(result)
                    if len(found) == limit:
                        break
    return found


def is_result(value: object) -> bool:
    """Return whether a line of results.jsonl holds what the page and the events show of a
    result (a line edited by hand may not)."""
    return (isinstance(value, dict) and isinstance(value.get("filename"), str)
            and {"status", "total_transactions", "invalid_rows", "total_amount_exact",
                 "top_category", "error"} <= value.keys())


def brief_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """Return what the page and the events show of a result."""
    return {"name": os.path.basename(result["filename"]), "status": result["status"],
            "valid": result["total_transactions"], "rejected": result["invalid_rows"],
            "total": result["total_amount_exact"], "top_category": result["top_category"],
            "error": result["error"]}


@dataclass
class SessionTotals:
    """What the files the server heard of add up to."""
    files: int = 0
    valid_rows: int = 0
    rejected_rows: int = 0
    amount: Decimal = Decimal(0)

    def add(self, result: FileResult) -> None:
        self.files += 1
        self.valid_rows += result["total_transactions"]
        self.rejected_rows += result["invalid_rows"]
        self.amount = EXACT.add(self.amount, Decimal(result["total_amount_exact"]))


PAGE_STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 60em; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.05em; margin-top: 1.5em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25em .6em; border-bottom: 1px solid #ddd; }
th { white-space: nowrap; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.counts table { width: auto; } .counts th, .counts td { min-width: 6em; }
.counts td { font-size: 1.4em; }
progress { width: 8em; vertical-align: middle; }
.error { color: #a00; } .muted { color: #777; }
"""

# Live without a framework: at each event the page fetches itself again and puts in the new
# <main>, which the server drew (and escaped) as it draws the first; at most once a second.
PAGE_SCRIPT = """
const live = document.getElementById("live");
let queued = false;
function redraw() {
  if (queued) return;
  queued = true;
  setTimeout(async () => {
    try {
      const page = await (await fetch("/", {cache: "no-store"})).text();
      const main = new DOMParser().parseFromString(page, "text/html").querySelector("main");
      if (main) document.querySelector("main").replaceWith(main);
    } catch (error) {
      live.textContent = "Cannot reach the watcher; trying again.";
    }
    queued = false;
  }, 1000);
}
const events = new EventSource("/events");
events.onopen = () => { live.textContent = "Live: updated as files arrive."; redraw(); };
events.onerror = () => { live.textContent = "Connection lost; reconnecting..."; };
for (const kind of ["claimed", "finished", "failed", "retry", "progress"]) {
  events.addEventListener(kind, redraw);
}
"""


def html_table(headings: list[str], rows: list[list[str]], empty: str) -> str:
    """Return a table of cells that are HTML already; a heading ending in # is a number."""
    if not rows:
        return f'<p class="muted">{empty}</p>'
    numeric = [heading.endswith("#") for heading in headings]
    head = "".join(f'<th class="n">{heading[:-1]}</th>' if number else f"<th>{heading}</th>"
                   for heading, number in zip(headings, numeric))
    body = "".join("<tr>" + "".join(f'<td class="n">{cell}</td>' if number else f"<td>{cell}</td>"
                                    for cell, number in zip(row, numeric)) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_page(stats: dict[str, Any], results: list[dict[str, Any]],
                errors: list[dict[str, Any]]) -> str:
    """Return the page: the state of /stats, the latest results and errors, every name escaped."""
    from html import escape
    folders, totals = stats["folders"], stats["totals"]
    counts = html_table([f"{folder}#" for folder in folders],
                        [[f"{count:,}" for count in folders.values()]], "")
    in_progress = html_table(
        ["File", "Status", "Rows#", "Rejected#", "Read", "Seconds#"],
        [[escape(file["name"]), escape(file["status"]), f"{file['rows']:,}",
          f"{file['rejected']:,}",
          (f'<progress max="{max(file["size"], 1)}" value="{file["bytes_read"]}"></progress> '
           f'{file["bytes_read"]:,} of {file["size"]:,} bytes'), f"{file['seconds']:.1f}"]
         for file in stats["in_progress"]], "No file in progress.")
    latest = html_table(
        ["File", "Status", "Valid#", "Rejected#", "Total#", "Top category"],
        [[escape(result["name"]), escape(result["status"]), f"{result['valid']:,}",
          f"{result['rejected']:,}", format_amount(result["total"]),
          escape(result["top_category"] or "")] if result["status"] == "completed" else
         [escape(result["name"]), escape(result["status"]), "-", "-", "-", "-"]
         for result in map(brief_result, results)], "No file processed yet.")
    failures = html_table(
        ["When (UTC)", "File", "Error"],
        [[escape(error["at"][11:19]), escape(error["name"]),
          f'<span class="error">{escape(error["kind"])}: {escape(error["error"])}</span>']
         for error in errors], "No errors.")
    title = f"Watching {escape(stats['watching'])}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>processor.py: {title}</title><style>{PAGE_STYLE}</style></head>
<body>
<p id="live" class="muted">Reload the page to see it now; with JavaScript it updates itself.</p>
<main>
<h1>processor.py: {title}</h1>
<p>Up {format_duration(stats["uptime"])}, {plural(totals["files"], "file")} processed
({folders["done"]:,} done, {folders["failed"]:,} failed):
{plural(totals["valid_rows"], "transaction")}, total {format_amount(totals["amount"])},
{plural(totals["rejected_rows"], "row")} rejected.</p>
<div class="counts">{counts}</div>
<h2>In progress</h2>{in_progress}
<h2>Latest results</h2>{latest}
<h2>Latest errors</h2>{failures}
</main>
<script>{PAGE_SCRIPT}</script>
</body></html>
"""


def never_raising(hook: Callable[P, None]) -> Callable[P, None]:
    """Return the hook, made to print a line rather than raise: a bug of the server's must not
    stop the watcher, which calls it."""
    @functools.wraps(hook)
    def hear(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            hook(*args, **kwargs)
        except Exception as error:
            status_line.print(f"processor.py: unexpected {type(error).__name__} in the server's "
                              f"{hook.__name__} hook: {error}")
    return hear


class WatchServer:
    """The HTTP face of one --watch session. Its hooks (claimed, finished, retrying) hear of
    the watcher; `run`, a view, serves until cancelled."""

    def __init__(self, listening: "socket.socket", session: WatchSession,
                 settings: dict[str, object], *, token: str | None, max_upload: int) -> None:
        self.http = HttpServer(listening, self.answer)
        self.session = session
        self.settings = settings  # shown in /stats
        self.token = token
        self.max_upload = max_upload
        self.batch: Batch | None = None  # the watcher's, once run
        self.uploading: set[str] = set()  # names being uploaded now
        self.totals = SessionTotals()
        self.errors: deque[dict[str, Any]] = deque(maxlen=SERVE_RECENT)
        self.reading_history = asyncio.Semaphore(1)

    # The hooks, which the watcher calls.

    @never_raising
    def claimed(self, path: str) -> None:
        self.http.send("claimed", {"name": os.path.basename(path), "at": utc_now()})

    @never_raising
    def finished(self, result: FileResult) -> None:
        self.totals.add(result)
        brief = brief_result(result) | {"at": utc_now()}
        if result["status"] == "completed":
            self.http.send("finished", brief)
        else:
            self.add_error("failed", brief["name"], str(result["error"]))
            self.http.send("failed", brief)

    @never_raising
    def retrying(self, filename: str, wait: float, error: str) -> None:
        name = os.path.basename(filename)
        self.add_error("retry", name, error, wait=round(wait, 3))
        self.http.send("retry", {"name": name, "wait": round(wait, 3), "error": error,
                                 "at": utc_now()})

    def add_error(self, kind: str, name: str, error: str, **more: object) -> None:
        self.errors.appendleft({"at": utc_now(), "kind": kind, "name": name, "error": error,
                                **more})

    # What the endpoints show.

    def in_progress(self) -> list[dict[str, Any]]:
        """Return each file in processing/ with how far it has got."""
        batch, now = self.batch, time.perf_counter()
        files = []
        for path in sorted(self.session.processing):
            progress = None if batch is None else batch.progress.get(path)
            status = ("retry wait" if batch is not None and path in batch.retrying
                      else "reading" if progress is not None else "claimed")
            progress = progress or FileProgress()
            files.append({"name": os.path.basename(path), "status": status,
                          "rows": progress.tally.count, "rejected": progress.tally.invalid_rows,
                          "bytes_read": progress.bytes_read, "size": file_size(path),
                          "seconds": round(max(now - progress.started, 0), 3)})
        return files

    def stats(self) -> dict[str, Any]:
        session = self.session
        return {
            "watching": session.folders.root,
            "uptime": round(time.perf_counter() - session.started, 3),
            # incoming/ and processing/ as they are; done/ and failed/ since this session began
            "folders": {"incoming": session.waiting, "processing": len(session.processing),
                        "done": session.done, "failed": session.failed},
            "in_progress": self.in_progress(),
            "totals": {"files": self.totals.files, "valid_rows": self.totals.valid_rows,
                       "rejected_rows": self.totals.rejected_rows,
                       "amount": f"{self.totals.amount:f}"},
            "settings": self.settings | {"uploads": self.token is not None,
                                         "max_upload": self.max_upload},
        }

    async def history(self, **choice: Any) -> list[dict[str, Any]]:
        """history() of results.jsonl, read in a thread: the disk must not hold up the loop."""
        # One read at a time: on a long history one can take seconds, and the threads it would
        # take are those the watcher uses too (for each file's SHA-256).
        try:
            async with asyncio.timeout(SERVE_TIMEOUT_S):
                await self.reading_history.acquire()
        except TimeoutError:
            raise HttpError(503, "the history is busy; try again soon",
                            ("Retry-After: 1",)) from None
        try:
            return await asyncio.to_thread(history, self.session.folders.results, **choice)
        except OSError as error:
            raise HttpError(500, f"cannot read {WATCH_RESULTS_NAME}: "
                                 f"{error.strerror or error}") from None
        finally:
            self.reading_history.release()

    async def page(self) -> bytes:
        results = await self.history(limit=SERVE_RECENT)
        return http_response(200, render_page(self.stats(), results, list(self.errors)).encode(),
                             "text/html; charset=utf-8")

    async def files(self, query: dict[str, str]) -> bytes:
        statuses = {"done": "completed", "failed": "error"}  # the folder, the result's status
        folder = query.get("status")
        if folder is not None and folder not in statuses:
            raise HttpError(400, "status must be done or failed")
        limit = whole_number_in(query, "limit", SERVE_PAGE_SIZE, 1, SERVE_MAX_PAGE)
        offset = whole_number_in(query, "offset", 0, 0, 10 ** 9)
        found = await self.history(status=None if folder is None else statuses[folder],
                                   limit=limit + 1, offset=offset)
        more = len(found) > limit
        next_page = (f"/files?{'status=' + folder + '&' if folder else ''}limit={limit}"
                     f"&offset={offset + limit}")
        return json_response({"files": found[:limit], "offset": offset, "limit": limit,
                              "next": next_page if more else None})

    async def one_file(self, name: str) -> bytes:
        # Only the names the watcher takes: any other would tell whether a path exists.
        if upload_name_problem(name) is not None:
            raise HttpError(404, f"no file {name!r}: not a name the watcher takes")
        # A file on its way first: a name that failed before may have been sent again.
        for file in self.in_progress():
            if file["name"] == name:
                return json_response(file)
        if os.path.isfile(os.path.join(self.session.folders.incoming, name)):
            return json_response({"name": name, "status": "waiting"})
        found = await self.history(name=name, limit=1)
        if found:
            return json_response(found[0])
        raise HttpError(404, f"no file {name} in incoming/, processing/ or the results")

    # Serving.

    async def run(self, batch: Batch) -> None:
        """Serve until cancelled, with a progress event every SERVE_PROGRESS_S while files are
        in progress; then close every connection.

        It starts at the watcher's first await, before any claim: a file is claimed at its
        second look at the earliest. Should the server fail, it says so and stops, and the
        watcher goes on: no one waits on a view's task until the end.
        """
        self.batch = batch
        try:
            remove_unfinished_uploads(self.session.folders.incoming)
            async with self.http.serving():
                while True:
                    await asyncio.sleep(SERVE_PROGRESS_S)
                    if self.session.processing:
                        self.http.send("progress", {"files": self.in_progress()})
        except Exception as error:
            status_line.print(f"processor.py: the server has stopped: unexpected "
                              f"{type(error).__name__}: {error}")
            self.http.listening.close()  # refused at once, rather than left waiting

    async def answer(self, request: Request, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        path = request.path
        if path.startswith("/incoming/"):
            require_method(request, "PUT")
            name = name_in(path, "/incoming/")
            writer.write(await self.upload(name, request, reader, writer))
            return
        require_method(request, "GET")
        if path.startswith("/files/"):
            writer.write(await self.one_file(name_in(path, "/files/")))
        elif path == "/":
            writer.write(await self.page())
        elif path == "/stats":
            writer.write(json_response(self.stats()))
        elif path == "/files":
            writer.write(await self.files(request.query))
        elif path == "/errors":
            writer.write(json_response({"errors": list(self.errors)}))
        elif path == "/healthz":
            writer.write(http_response(200, b"ok\n", "text/plain; charset=utf-8"))
        elif path == "/events":
            await self.http.stream_events(reader, writer)
        else:
            raise HttpError(404, f"nothing at {path}")

    async def upload(self, name: str, request: Request, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> bytes:
        """Take the body as incoming/name, under a hidden name until it is whole and on the
        disk, so that the watcher never sees half of it; return the 201 response."""
        length = self.check_upload(name, request)
        if request.headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the client waits for it to send
        folder = self.session.folders.incoming
        temporary = os.path.join(folder, f".{name}.{os.urandom(6).hex()}{UPLOAD_SUFFIX}")
        self.uploading.add(name)
        try:
            await receive_body(reader, temporary, length)
            self.check_name_free(name)  # again: a file of that name may have come another way
            await asyncio.to_thread(publish, temporary, os.path.join(folder, name))
        except FileExistsError:
            raise HttpError(409, f"{name} is already in incoming/") from None
        except (ConnectionError, TimeoutError):
            raise  # the client has gone, or is too slow: the finally below removes its part
        except OSError as error:
            raise HttpError(500, f"cannot keep {name}: {error.strerror or error}") from None
        finally:
            self.uploading.discard(name)
            with suppress(OSError):
                os.remove(temporary)
        location = f"/files/{quote_name(name)}"
        return json_response({"name": name, "bytes": length, "result": location}, 201,
                             (f"Location: {location}",))

    def check_upload(self, name: str, request: Request) -> int:
        """Return the length of the upload; raise HttpError if it is not to be taken."""
        self.check_token(request)
        if problem := upload_name_problem(name):
            raise HttpError(400, f"cannot upload {name!r}: {problem}")
        length = content_length(request)
        if length > self.max_upload:
            raise HttpError(413, f"{length:,} bytes is over the limit of {self.max_upload:,}")
        if name in self.uploading:
            raise HttpError(409, f"{name} is being uploaded already")
        self.check_name_free(name)
        return length

    def check_token(self, request: Request) -> None:
        """Raise HttpError unless uploads are on and the request has their token."""
        import hmac
        if self.token is None:
            raise HttpError(403, f"uploads are off: the watcher was started without "
                                 f"{SERVE_TOKEN_VARIABLE}")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            given = ""
        # compare_digest takes as long whatever bytes differ: timing tells nothing of the token.
        if not hmac.compare_digest(given.encode("latin-1"), self.token.encode()):
            raise HttpError(401, "uploads need the header Authorization: Bearer TOKEN",
                            ("WWW-Authenticate: Bearer",))

    def check_name_free(self, name: str) -> None:
        """Raise HttpError 409 if a file of this name is waiting, in processing or done."""
        folders = self.session.folders
        for folder in (folders.incoming, folders.processing, folders.done):
            if os.path.lexists(os.path.join(folder, name)):
                raise HttpError(409, f"{name} is already in {os.path.basename(folder)}/")


def quote_name(name: str) -> str:
    from urllib.parse import quote
    return quote(name, safe="")


def content_length(request: Request) -> int:
    """Return the request's Content-Length; raise HttpError 411 or 400 if it has none."""
    text = request.headers.get("content-length")
    if text is None or "transfer-encoding" in request.headers:
        raise HttpError(411, "an upload needs a Content-Length, and no Transfer-Encoding "
                             "(curl -T FILE sends one; curl -T - does not)")
    if not text.isascii() or not text.isdigit():
        raise HttpError(400, f"Content-Length is not a number of bytes: {text!r}")
    return int(text)


async def receive_body(reader: asyncio.StreamReader, path: str, length: int) -> None:
    """Write the request's body, `length` bytes, to a new file at path; raise TimeoutError for
    a client silent for SERVE_TIMEOUT_S or too slow on the whole, ConnectionResetError for one
    that goes first."""
    # Too slow on the whole: a client that sends a byte now and then would keep its connection,
    # and its file, for ever. The writes stay on the loop: each goes to the system's cache in
    # microseconds; the wait for the disk is publish's, in a thread.
    with open(path, "xb") as file:
        async with asyncio.timeout(SERVE_TIMEOUT_S + length / SERVE_MIN_UPLOAD_RATE):
            left = length
            while left:
                async with asyncio.timeout(SERVE_TIMEOUT_S):
                    data = await reader.read(min(left, READ_BYTES))
                if not data:
                    raise ConnectionResetError("the upload ended before its length")
                file.write(data)
                left -= len(data)


def publish(temporary: str, path: str) -> None:
    """Give a whole upload its own name, once it is on the disk, and the name too; raise
    FileExistsError if the name is taken."""
    force_to_disk(temporary)  # a 201 promises the file is kept
    # A link, then the temporary name removed, rather than a rename, which would replace a file
    # of that name dropped in meanwhile.
    os.link(temporary, path)
    force_to_disk(os.path.dirname(path))  # the folder holds the name


def force_to_disk(path: str) -> None:
    """Return once the file's bytes are on the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_unfinished_uploads(folder: str) -> None:
    """Remove the temporary files of uploads that a stopped run left half written; one that
    cannot be removed stays, for it is hidden from the watcher."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(UPLOAD_SUFFIX):
                with suppress(OSError):
                    os.remove(entry.path)


# --- The command line ---

def whole_number(text: str, minimum: int) -> int:
    """Parse an option value that must be a whole number of at least minimum."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
    return value


def positive_int(text: str) -> int:
    return whole_number(text, minimum=1)


def non_negative_int(text: str) -> int:
    return whole_number(text, minimum=0)


def non_negative_seconds(text: str) -> float:
    """Parse an option value that must be a finite number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, not {text!r}")
    return value


def positive_seconds(text: str) -> float:
    """Parse an option value that must be a finite number of seconds, more than 0."""
    value = non_negative_seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def text_encoding(text: str) -> str:
    """Parse an option value that must name an encoding Python can decode text with, bad
    bytes and all."""
    try:
        codec = choose_codec(b"", text)[0]
        b"\xff".decode(codec, errors_for(codec))  # a codec that refuses the handler fails here
    except (LookupError, ValueError):
        raise argparse.ArgumentTypeError(f"not a text encoding Python can read files in: {text!r} "
                                         "(try utf-8, cp1252, latin-1 or utf-16)") from None
    return text


def worker_count(text: str) -> int:
    """Parse --workers: a whole number of 0 or more, or `auto` for one a core."""
    if text == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return non_negative_int(text)


BYTE_UNITS = {"": 1, "b": 1, "k": 10 ** 3, "kb": 10 ** 3, "m": 10 ** 6, "mb": 10 ** 6,
              "g": 10 ** 9, "gb": 10 ** 9, "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30}


def byte_count(text: str) -> int:
    """Parse a size: a whole number of bytes, or of KB, MB, GB (powers of 1000) or KiB, MiB,
    GiB (of 1024), e.g. 100MB."""
    number = text.rstrip("BbGgiKkMm")
    unit = BYTE_UNITS.get(text[len(number):].lower())
    if unit is None or not number.isascii() or not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError(f"not a size like 5000000, 100MB or 1GiB: {text!r}")
    return int(number) * unit


def serve_address(text: str) -> tuple[str, int]:
    """Parse --serve's [HOST:]PORT."""
    try:
        return parse_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def delimiter_character(text: str) -> str:
    """Parse an option value that must be one character, neither a quote nor a line end;
    `tab` and `\\t` both mean a tab."""
    character = "\t" if text.lower() in ("tab", "\\t") else text
    if len(character) != 1 or character in '"\r\n':
        raise argparse.ArgumentTypeError(f"must be one character other than a quote or a line "
                                         f"end, not {text!r}")
    return character


def file_path(text: str) -> str:
    """Parse an option value that must name a file: an empty one would be no file at all."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


EPILOG = """\
A valid row has every required column (transaction_id, customer_id, amount, date,
category: any order, any case, extra columns ignored), as many fields as the header,
non-empty ids and category, an amount in plain decimal notation (12, -3.00, .5; no $,
thousands separators or exponents; 12,50 with --decimal-comma) and a real YYYY-MM-DD
date. Other rows are rejected, listed with their line number and reason, and left out
of every figure. Amounts are summed exactly. Progress goes to stderr; the report or the
JSON to stdout.

exit status:
  0    every file completed (some rows may have been rejected)
  1    a file could not be processed (missing, unreadable, empty, bad header, damaged
       gzip, changed while being read; after its retries, if any), a result could not
       be saved to --db, or --watch could not record a result or move a file and stopped
  2    usage error: no files (a directory with none, or that cannot be listed), a bad
       option value, a --db, --rejects or --watch path that cannot be used,
       --workers that cannot be started, or a --serve address that cannot be listened on
  130  interrupted by Ctrl-C: what finished is reported and the rest named; --watch
       sums up its session and puts the files in progress back in DIR/incoming
  143  stopped by SIGTERM (kill, systemctl stop, docker stop), handled as Ctrl-C;
  129  by SIGHUP (the terminal closed), the same; before the batch a stop signal ends
       the program at once, and during the report it stops the report
  141  stdout was closed by its reader (| head): stopped quietly

examples:
  python processor.py sample_data/*.csv
  python processor.py --json --delay 0 sample_data | jq .summary
  zcat export.csv.gz | python processor.py --encoding cp1252 --decimal-comma -
  python processor.py --watch inbox --db results.db
  PROCESSOR_UPLOAD_TOKEN=secret python processor.py --watch inbox --serve 8080

README.md tells more of each option, with real output: files from the real world, how
retries wait, the tables of --db, the rejects files, the dashboard, the timeline, the
folders of --watch, and what --serve answers.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="processor.py",
        description="Compute transaction statistics for a batch of CSV files, "
                    "several files at a time.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", metavar="FILE_OR_DIR",
                        help="CSV files to process, gzipped if the name ends .gz, or - for "
                             "standard input; a directory means the *.csv and *.csv.gz files "
                             "directly inside it (any case), sorted by name")
    parser.add_argument("--max-concurrent", type=positive_int, default=3, metavar="N",
                        help="process at most N files at a time (default: %(default)s)")
    parser.add_argument("--delay", type=non_negative_seconds, default=0.1, metavar="SECONDS",
                        help="simulated I/O pause after every 100 rows; 0 runs at full speed "
                             "(default: %(default)s)")
    parser.add_argument("--encoding", type=text_encoding, default="utf-8", metavar="NAME",
                        help="the files' text encoding, e.g. cp1252 for a Windows export; a "
                             "UTF-8, UTF-16 or UTF-32 byte-order mark overrides it "
                             "(default: %(default)s)")
    parser.add_argument("--delimiter", type=delimiter_character, metavar="CHAR",
                        help="the character between columns; tab or \\t for a tab (default: a "
                             "comma, or ';', a tab or '|' when only that gives the header every "
                             "required column)")
    parser.add_argument("--decimal-comma", action="store_true",
                        help="read amounts written with a decimal comma, 1234,50 (no thousands "
                             "separators; an amount with a point is rejected) (default: off)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true",
                        help="print the results as JSON instead of the report (default: off)")
    output.add_argument("--timeline", action="store_true",
                        help="after the report, draw which file held which of the "
                             "--max-concurrent slots, and when (default: off)")
    parser.add_argument("--workers", type=worker_count, default=0, metavar="N",
                        help="read each file of 1 MiB or more in a worker process, so that "
                             "checking rows, which is CPU work, runs on more cores than the "
                             "event loop's one: one worker for each of the --max-concurrent "
                             "slots, whatever N from 1 (auto: one a core; an N above "
                             "--max-concurrent gets a note); smaller files and standard input "
                             "stay in the main process (default: 0, no workers)")
    parser.add_argument("--retries", type=non_negative_int, default=0, metavar="N",
                        help="try again, up to N more times, a file that failed for a reason "
                             "that may pass: missing, unreadable, changed while being read "
                             "(default: %(default)s)")
    parser.add_argument("--retry-delay", type=non_negative_seconds, default=0.5, metavar="SECONDS",
                        help="wait before the first retry; each next wait doubles, up to "
                             f"{RETRY_WAIT_CAP_S:g} s (default: %(default)s)")
    parser.add_argument("--db", type=file_path, metavar="PATH",
                        help="also save the batch, each file as it finishes, to this SQLite "
                             "database, created if missing; each run adds a batch "
                             "(default: not saved)")
    parser.add_argument("--dashboard", action="store_true",
                        help="show the batch full screen (slots, files, events) instead of the "
                             "spinner and progress lines; q stops like Ctrl-C (default: off)")
    parser.add_argument("--rejects", type=file_path, metavar="DIR",
                        help="write every rejected row of each file, with its line and reason, "
                             "to DIR/NAME.rejects.csv, DIR created if missing; files with the "
                             "same NAME get NAME-2, NAME-3... (default: not written)")
    parser.add_argument("--watch", type=file_path, metavar="DIR",
                        help="instead of FILE_OR_DIR, run until Ctrl-C processing each *.csv "
                             "or *.csv.gz file that arrives complete in DIR/incoming: its "
                             "result goes to "
                             "DIR/results.jsonl, then it moves to DIR/done or DIR/failed "
                             "(default: off)")
    parser.add_argument("--poll", type=positive_seconds, metavar="SECONDS",
                        help="with --watch, look in DIR/incoming this often "
                             f"(default: {WATCH_POLL_S:g})")
    parser.add_argument("--settle", type=non_negative_seconds, metavar="SECONDS",
                        help="with --watch, take a file once its size and modification time "
                             "have not changed for this long, so that an upload that pauses is "
                             "not taken half written; an upload written under a hidden name "
                             "(.name.csv) and renamed when complete is never seen early "
                             f"(default: {WATCH_SETTLE_S:g})")
    parser.add_argument("--serve", type=serve_address, metavar="[HOST:]PORT",
                        help="with --watch, serve the watcher over HTTP: a live page at /, "
                             "JSON at /stats, /files and /errors, an event stream at /events, "
                             "and uploads by PUT /incoming/NAME, which need the token set in "
                             f"{SERVE_TOKEN_VARIABLE} (host {SERVE_DEFAULT_HOST} unless given; "
                             "port 0 picks a free one) (default: off)")
    parser.add_argument("--max-upload", type=byte_count, metavar="SIZE",
                        help="with --serve, refuse an upload larger than this, e.g. 5000000, "
                             f"100MB, 1GiB (default: {DEFAULT_MAX_UPLOAD // 10 ** 6}MB)")
    return parser


def check_watch_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit 2 for --watch with files or with an option it cannot be combined with, for --poll,
    --settle or --serve without --watch, and for --max-upload without --serve."""
    if args.serve is None and args.max_upload is not None:
        parser.error("--max-upload needs --serve")
    if args.watch is None:
        for option, given in (("--poll", args.poll), ("--settle", args.settle),
                              ("--serve", args.serve)):
            if given is not None:
                parser.error(f"{option} needs --watch")
        return
    if args.paths:
        parser.error("--watch takes no FILE_OR_DIR: its files arrive in DIR/incoming")
    for option, given in (("--json", args.json), ("--timeline", args.timeline),
                          ("--rejects", args.rejects)):
        if given:
            parser.error(f"{option} cannot be combined with --watch, whose results go to "
                         f"DIR/{WATCH_RESULTS_NAME}")


def csv_files_in(directory: str) -> list[str]:
    """Return the paths of the CSV files directly inside directory (see is_csv_name), sorted
    by name; raise OSError if it cannot be listed."""
    with os.scandir(directory) as entries:
        names = sorted(entry.name for entry in entries
                       if is_csv_name(entry.name) and not entry.is_dir())
    return [os.path.join(directory, name) for name in names]


def file_identity(path: str) -> tuple[int, int] | str:
    """Return what every name of one file has in common: its device and inode number; for
    a file that cannot be seen, its absolute path; for standard input, `-`."""
    if path == STDIN:
        return path
    try:
        stats = os.stat(path)
    except OSError:
        return os.path.abspath(path)
    return (stats.st_dev, stats.st_ino)


def expand_paths(paths: list[str]) -> tuple[list[str], list[str]]:
    """Return the distinct files to process, a directory replaced by its CSV files and a file
    reached under several names kept under the first, and the directories that held none.
    Raise OSError for a directory that cannot be listed."""
    filenames: list[str] = []
    empty_directories: list[str] = []
    for path in paths:
        if path != STDIN and os.path.isdir(path):
            found = csv_files_in(path)
            filenames += found
            if not found:
                empty_directories.append(path)
        else:
            filenames.append(path)
    first_names: dict[tuple[int, int] | str, str] = {}
    for filename in filenames:
        first_names.setdefault(file_identity(filename), filename)
    return list(first_names.values()), empty_directories


def parse_command_line(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Return the options and the distinct files to process (none with --watch); a usage
    error exits 2 here."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_watch_options(parser, args)
    if args.watch is not None:
        return args, []
    if not args.paths:
        parser.error("no files given")
    if args.paths.count(STDIN) > 1:
        parser.error("- (standard input) can be read only once")
    if STDIN in args.paths and args.dashboard:
        parser.error("--dashboard reads its keys from standard input, so it cannot be "
                     "combined with -")
    try:
        filenames, empty_directories = expand_paths(args.paths)
    except OSError as error:
        print(f"processor.py: error: cannot list the directory {error.filename}: "
              f"{error.strerror or error}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    for directory in empty_directories:
        print(f"processor.py: no *.csv or *.csv.gz files in {directory}", file=sys.stderr)
    if not filenames:
        parser.error("no CSV files to process")
    return args, filenames


SAMPLE_BYTES = 65536  # read from the largest file to see how long its lines are


def bytes_per_row(path: str) -> float | None:
    """Return how many bytes a line of the file takes, from its first 64 KiB; None if it
    cannot be read, has no line break there, or is not plain text (gzip)."""
    try:
        with open(path, "rb") as file:
            sample = file.read(SAMPLE_BYTES)
    except OSError:
        return None
    if sample.startswith(GZIP_MAGIC) or not sample.count(b"\n"):
        return None
    return len(sample) / sample.count(b"\n")


def delay_hint(filenames: list[str], settings: Settings) -> str | None:
    """Return a line telling that the simulated pause will take more than a minute by itself,
    and how to turn it off; None when it will not, or there is no telling."""
    files = [name for name in largest_first(filenames) if name != STDIN]
    row_bytes = bytes_per_row(files[0]) if files and settings.delay > 0 else None
    if row_bytes is None:
        return None
    sizes = [file_size(name) for name in files]
    # A pause after every chunk of rows; max_concurrent files pause at once, but the largest
    # file's pauses come one after another whatever the others do.
    chunks = max(sizes[0], sum(sizes) / settings.max_concurrent) / row_bytes / ROWS_PER_CHUNK
    seconds = chunks * settings.delay
    if seconds <= 60:
        return None
    return (f"processor.py: the simulated I/O pause alone (--delay {settings.delay:g} s after "
            f"every {ROWS_PER_CHUNK} rows) will take about {format_duration(seconds)}; "
            "--delay 0 turns it off")


def start_database(path: str | None, settings: Settings,
                   filenames: list[str]) -> DatabaseWriter | None:
    """Return the --db writer with its thread started, or None; exit 2 if the path is unusable."""
    if path is None:
        return None
    try:
        return DatabaseWriter(path, settings, filenames)
    except DatabaseUnusable as error:
        print(f"processor.py: error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def client_reader(args: argparse.Namespace) -> FileReader:
    """Return a reader that calls process_file, reading files as the options say (see
    ClientFiles)."""
    # A partial of a function, not a closure: with --workers it is sent to a worker process.
    return functools.partial(read_client_file,
                             ClientFiles(args.encoding, args.delimiter, args.decimal_comma))


async def read_client_file(client_files: ClientFiles, filename: str, *, delay: float,
                           progress: FileProgress,
                           on_rejected: RejectedHook = ignore) -> FileResult:
    """Read a file with process_file, opened by client_files."""
    # process_file is looked up at each call, as the coordinator does: a test may wrap it.
    return await process_file(filename, delay=delay, progress=progress,
                              on_rejected=on_rejected, open_input=client_files.open_input)


@contextmanager
def using_workers(count: int, max_concurrent: int,
                  read_file: FileReader) -> Iterator[FileReader]:
    """Start the --workers processes, if count asks for any, warm before the first file;
    yield read_file, made to send large files to them; stop them as the block ends."""
    if not count:
        yield read_file
        return
    if count > max_concurrent:
        status_line.print(f"processor.py: --workers {count}: only {max_concurrent} files are "
                          f"read at a time (--max-concurrent), so {max_concurrent} workers; "
                          "raise --max-concurrent to use more cores")
    from concurrent.futures.process import BrokenProcessPool
    workers: Workers | None = None
    try:
        started = time.perf_counter()
        try:
            workers = Workers(max_concurrent)
            workers.start()
        except (OSError, BrokenProcessPool) as error:  # no shared memory, a worker killed...
            reason = error.strerror if isinstance(error, OSError) else None
            print(f"processor.py: error: cannot start worker processes: {reason or error}",
                  file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
        # Said here, as the report's elapsed time, and what it says concurrency saved, are
        # the batch's, which starts after this.
        processes = "1 worker process" if max_concurrent == 1 else f"{max_concurrent} worker processes"
        status_line.print(f"Started {processes} in {time.perf_counter() - started:.2f} s")
        yield functools.partial(read_using_workers, workers, read_file)
    finally:
        if workers is not None:
            # Held back, a stop signal cannot cut the workers' end short; it is handled after.
            with signals_held():
                workers.stop()


def start_rejects(folder: str | None, filenames: list[str], read_file: FileReader) -> FileReader:
    """Return read_file, made to keep rejected rows in the --rejects folder if one is given;
    exit 2 if the folder cannot be created or written."""
    if folder is None:
        return read_file
    try:
        return keep_rejects(folder, filenames, read_file)
    except RejectsUnusable as error:
        print(f"processor.py: error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def dashboard_unavailable() -> str | None:
    """Return why --dashboard cannot be drawn here, or None if it can."""
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        return "stdout and stderr must both be a terminal"
    terminal = os.environ.get("TERM", "")
    if terminal in ("", "dumb"):
        return "TERM is dumb" if terminal else "TERM is not set"
    try:
        import curses
    except ImportError:
        return "this Python has no curses module"
    try:
        curses.setupterm(terminal, sys.stdout.fileno())
    except curses.error:
        return f"the terminal type {terminal!r} is unknown here"
    return None


def check_dashboard(wanted: bool) -> bool:
    """Return whether to draw the dashboard; if it was wanted but cannot be, say why."""
    why_not = dashboard_unavailable() if wanted else None
    if why_not is not None:
        status_line.print(f"processor.py: no dashboard ({why_not}); showing the progress lines "
                          "instead")
    return wanted and why_not is None


# Stopping. Ctrl-C sends SIGINT; `kill`, `systemctl stop` and `docker stop` send SIGTERM; a
# terminal that closes sends SIGHUP. Each asks the program to stop, and StopSignals handles all
# three alike, whatever the moment. Outside the event loop a stop signal raises
# KeyboardInterrupt, as Python does for SIGINT: main catches it before the batch (there is
# nothing to report yet: the program ends quietly) and in the middle of the report (which
# stops, its exit status telling whoever reads it that it is incomplete). While the event loop
# runs, a KeyboardInterrupt raised in the midst of a task's step would tear through it; so
# there the first stop signal cancels the task that runs the batch, as asyncio.run does for
# SIGINT: each file stops at its next await, every finally runs, and run_in_loop raises
# KeyboardInterrupt once the loop has wound down, for run_command_line to report what finished.
# Only the exit status tells the three signals apart: 128 + the number of the first to come.

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def signals_not_ignored() -> list[int]:
    """Return the stop signals to handle: a signal the program was started with ignored (SIGHUP
    under nohup, SIGINT in a background job) stays ignored."""
    return [number for number in STOP_SIGNALS if signal.getsignal(number) is not signal.SIG_IGN]


class StopSignals:
    """In a with block, each stop signal raises KeyboardInterrupt, or, in `cancelling`,
    cancels a task; `received` is the first signal that came."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, "signal._HANDLER"] = {}

    def __enter__(self) -> "StopSignals":
        self.previous = {number: signal.signal(number, self.interrupt)
                         for number in signals_not_ignored()}
        return self

    def __exit__(self, *exception: object) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def interrupt(self, number: int, frame: "FrameType | None") -> None:
        """The handler outside the event loop."""
        self.received = self.received or number
        raise KeyboardInterrupt

    @contextmanager
    def cancelling(self, task: "asyncio.Task[T]") -> Iterator[None]:
        """While the block runs, the first stop signal cancels task instead, and the next ones
        are only noted: the task is stopping already, and a second cancel would interrupt its
        cleanup."""
        def cancel(number: int, frame: "FrameType | None") -> None:
            first = self.received is None
            self.received = self.received or number
            if first and not task.done():
                # Not task.cancel() here: the handler may run in the midst of the loop's own
                # code, between two steps that must not have a cancel come between them. As a
                # callback, the cancel comes at the loop's next turn, which this also wakes.
                task.get_loop().call_soon_threadsafe(task.cancel)

        for number in self.previous:
            signal.signal(number, cancel)
        try:
            yield
        finally:
            for number in self.previous:
                signal.signal(number, self.interrupt)


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold back the stop signals while the block runs: one that came is handled as it ends."""
    came: list[int] = []
    previous = {number: signal.signal(number, lambda signum, frame: came.append(signum))
                for number in signals_not_ignored()}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for held in came:
            signal.raise_signal(held)


def run_in_loop(work: Callable[[], Coroutine[None, None, T]], stop: StopSignals) -> T:
    """Run work() in a new event loop and return what it returns, as asyncio.run does; raise
    KeyboardInterrupt if a stop signal came, once the loop has wound down."""
    runner = asyncio.Runner()
    try:
        # A signal while the loop is made, or between making the coroutine and handing it to
        # a task, would leave either half made, to be complained of at exit. Once both are
        # made, the runner closes the loop however the work ends, cancelling the task.
        with signals_held():
            task = runner.get_loop().create_task(work())
        with stop.cancelling(task):
            with suppress(asyncio.CancelledError):  # what a stop signal does, told below
                runner.get_loop().run_until_complete(task)
            runner.close()  # cancels and awaits what is left: a stop signal only adds a note
    finally:
        runner.close()  # after a signal held above; closing twice does nothing
    if stop.received is not None:
        raise KeyboardInterrupt
    return task.result()


def run_on_screen(work: Callable[["curses.window | None"], Coroutine[None, None, T]], *,
                  dashboard: bool, stop: StopSignals) -> T:
    """Run work(screen) in an event loop (see run_in_loop) and return what it returns; screen
    is the whole terminal with the dashboard, else None."""
    if not dashboard:
        return run_in_loop(lambda: work(None), stop)
    import curses
    # What curses.wrapper does, with the signals held while the terminal is set up and while it
    # is given back: one in the midst of either would leave it half set (keys not echoed).
    screen = None
    try:
        with signals_held():
            screen = curses.initscr()
            curses.noecho()
            curses.cbreak()
            screen.keypad(True)
        return run_in_loop(lambda: work(screen), stop)
    finally:
        if screen is not None:
            with signals_held():
                # Each step on its own: a terminal that has gone fails them, and the rest must
                # still be tried.
                undo: list[Callable[[], object]] = [functools.partial(screen.keypad, False),
                                                    curses.echo, curses.nocbreak, curses.endwin]
                for step in undo:
                    with suppress(curses.error):
                        step()


def save_and_log(db: DatabaseWriter | None, events: EventLog) -> ResultHook:
    """Return the on_result hook: each result goes to the event log and, with --db, is saved."""
    def on_result(result: FileResult) -> None:
        events.add_result(result)
        if db is not None:
            db.save(result)
    return on_result


def run_batch(filenames: list[str], settings: Settings, results: dict[str, FileResult], *,
              db: DatabaseWriter | None, read_file: FileReader, dashboard: bool,
              stop: StopSignals) -> BatchResult:
    """Run the batch to its end, with the extras asked for plugged in."""
    events = EventLog()
    return run_on_screen(
        lambda screen: process_batch(
            filenames, **asdict(settings), results=results, read_file=read_file,
            on_result=save_and_log(db, events), on_retry=events.add_retry,
            view=None if screen is None else functools.partial(show_dashboard, screen, events)),
        dashboard=dashboard, stop=stop)


def format_interruption(batch: BatchResult, width: int) -> str:
    """Return the line that names the files a stop signal stopped, as many as fit in width."""
    unfinished = [name for name, result in batch["results"].items()
                  if result["status"] == "cancelled"]
    label = "Interrupted: not finished: "
    return (label + list_names(unfinished, width - len(label)) if unfinished
            else "Interrupted: every file had finished")


def recover_and_report(folders: WatchFolders) -> None:
    """Put back what a stopped run left in processing/, and cut a torn results line, saying so
    on stderr; raise WatchFailed if that cannot be done."""
    for path in recover_files(folders):
        status_line.print(f"processor.py: {os.path.basename(path)} was left in processing/ by "
                          "a run that stopped; moved back to incoming/ to be processed again")
    try:
        torn = cut_torn_line(folders.results)
    except OSError as error:
        raise WatchFailed(f"cannot check {folders.results}: {error.strerror or error}") from None
    if torn:
        status_line.print(f"processor.py: {folders.results} ended in a line cut short; removed "
                          "it (its file is one of those moved back)")


def call_each(*hooks: Callable[..., None]) -> Callable[..., None]:
    """Return a hook that passes what it hears to each of hooks in turn."""
    def hear(*details: object) -> None:
        for hook in hooks:
            hook(*details)
    return hear


def start_serving(listening: "socket.socket", session: WatchSession, settings: dict[str, object],
                  max_upload: int) -> WatchServer:
    """Return the server of the session, saying on stderr where it is, and warning if it is
    open to a network without a token."""
    token = os.environ.get(SERVE_TOKEN_VARIABLE) or None
    url = address_url(listening)
    uploads = ("uploads on: PUT /incoming/NAME with the token" if token else
               f"uploads off: set {SERVE_TOKEN_VARIABLE} to take them")
    status_line.print(f"Serving {url} ({uploads})")
    if token is None and not is_loopback(listening):
        status_line.print(f"processor.py: warning: {url} is open to the network, and without "
                          f"{SERVE_TOKEN_VARIABLE} so is all it shows: the page, /stats, "
                          "/files, /errors and /events")
    return WatchServer(listening, session, settings, token=token, max_upload=max_upload)


def run_watch(args: argparse.Namespace, settings: Settings, folders: WatchFolders,
              listening: "socket.socket | None", stop: StopSignals) -> int:
    """Watch the folder until a stop signal, serving it if listening; return its exit status,
    or 1 if the watcher could not go on."""
    session = WatchSession(folders)
    poll = args.poll or WATCH_POLL_S
    settle = WATCH_SETTLE_S if args.settle is None else args.settle
    dashboard = check_dashboard(args.dashboard)
    # Without the dashboard, its events (a file finished, failed, waits to retry) go to stderr.
    events = EventLog(echo=None if dashboard else status_line.print)
    db: DatabaseWriter | None = None
    code = EXIT_OK  # never kept: the watcher ends only at a stop signal or a failure
    try:
        recover_and_report(folders)
        # The workers first: they start while this is the only thread (see start_ignoring).
        with using_workers(args.workers, settings.max_concurrent,
                           client_reader(args)) as read_file:
            db = start_database(args.db, settings, [])
            status_line.print(f"Watching {folders.incoming} for *.csv and *.csv.gz files, up "
                              f"to {settings.max_concurrent} at a time (Ctrl-C to stop)")
            on_claim: ClaimHook = ignore
            on_result: ResultHook = save_and_log(db, events)
            on_retry: RetryHook = events.add_retry
            alongside: list[View] = []
            if listening is not None:
                settings_shown = asdict(settings) | {"poll": poll, "settle": settle,
                                                     "workers": args.workers}
                server = start_serving(listening, session, settings_shown,
                                       args.max_upload or DEFAULT_MAX_UPLOAD)
                on_claim = server.claimed
                on_result = call_each(on_result, server.finished)
                on_retry = call_each(on_retry, server.retrying)
                alongside = [server.run]
            run_on_screen(lambda screen: watch_folder(
                session, settings, poll=poll, settle=settle, read_file=read_file,
                on_claim=on_claim, on_result=on_result, on_retry=on_retry,
                view=None if screen is None else functools.partial(show_watch_dashboard, screen,
                                                                   session, events),
                alongside=alongside),
                dashboard=dashboard, stop=stop)
    except KeyboardInterrupt:
        code = EXIT_SIGNALLED + (stop.received or signal.SIGINT)
    except WatchFailed as error:
        status_line.print(f"processor.py: error: {error}")
        code = EXIT_FILE_ERROR
    finally:
        if db is not None:
            db.finish(interrupted=bool(session.put_back))
    print(format_watch_summary(session, time.perf_counter() - session.started,
                               terminal_width(sys.stdout) or LOG_LINE_WIDTH))
    if db is not None:
        status_line.print(db.outcome())
    return code


def watch_command(args: argparse.Namespace, settings: Settings, stop: StopSignals) -> int:
    """Run --watch and return its exit status; exit 2 if the folder cannot be watched or the
    --serve address listened on."""
    try:
        folders, lock = open_watch_folder(args.watch)
    except WatchUnusable as error:
        print(f"processor.py: error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    try:
        # Listening before anything is claimed: a port in use ends the run here, as a usage error.
        listening = None if args.serve is None else listen_on(*args.serve)
    except ServeUnusable as error:
        os.close(lock)
        print(f"processor.py: error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    try:
        return run_watch(args, settings, folders, listening, stop)
    finally:
        if listening is not None:
            listening.close()
        os.close(lock)


def run_command_line(argv: list[str] | None, stop: StopSignals) -> int:
    """Parse the arguments, run the batch (or the watcher) and print its report; return the
    exit status. A stop signal during the batch gives the report of what finished."""
    args, filenames = parse_command_line(argv)
    settings = Settings(max_concurrent=args.max_concurrent, delay=args.delay,
                        retries=args.retries, retry_delay=args.retry_delay)
    if args.watch is not None:
        return watch_command(args, settings, stop)
    read_file = start_rejects(args.rejects, filenames, client_reader(args))
    # Workers only if a file is large enough to be sent to one.
    large_files = any(file_size(name) >= WORKER_MIN_BYTES for name in filenames)
    with using_workers(args.workers if large_files else 0, settings.max_concurrent,
                       read_file) as read_file:
        return run_files(args, settings, filenames, read_file, stop)


def run_files(args: argparse.Namespace, settings: Settings, filenames: list[str],
              read_file: FileReader, stop: StopSignals) -> int:
    """Run the batch of files and print its report; return the exit status."""
    dashboard = check_dashboard(args.dashboard)
    format_output = (format_json if args.json else
                     functools.partial(format_report, width=terminal_width(sys.stdout)))
    results: dict[str, FileResult] = {}
    started = time.perf_counter()
    try:
        # A database locked by another program can keep this waiting, until a stop signal.
        db = start_database(args.db, settings, filenames)
    except KeyboardInterrupt:
        status_line.print(f"processor.py: nothing saved to {args.db}: stopped while it was "
                          "opened")
        raise
    stopped_by: int | None = None
    try:
        status_line.print(f"Processing {plural(len(filenames), 'file')}, up to "
                          f"{settings.max_concurrent} at a time (Ctrl-C to stop)")
        if hint := delay_hint(filenames, settings):
            status_line.print(hint)
        batch = run_batch(filenames, settings, results, db=db, read_file=read_file,
                          dashboard=dashboard, stop=stop)
    except KeyboardInterrupt:
        stopped_by = stop.received or signal.SIGINT
        batch = summarize_batch(filenames, results, time.perf_counter() - started)
    finally:
        # After a stop signal too: what finished is saved, the rest saved as cancelled.
        if db is not None and not db.finish():
            stopped_by = stop.received or signal.SIGINT
    print(format_output(batch))
    if args.timeline:
        print("\n" + format_batch_timeline(batch, settings.max_concurrent, timeline_width()))
    if stopped_by is not None:
        status_line.print(format_interruption(batch, terminal_width(sys.stderr) or LOG_LINE_WIDTH))
    if db is not None:
        status_line.print(db.outcome())
    return exit_code(batch, stopped_by, all_saved=db is None or not db.failures)


def discard_output() -> None:
    """Write what can still be written, and send the rest nowhere: Python flushes stdout and
    stderr at exit, which would fail again where they lead."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a stream with no descriptor (a test's capture)
            with suppress(OSError):
                stream.flush()
            os.dup2(devnull, stream.fileno())
    os.close(devnull)


def run_and_report(argv: list[str] | None, stop: StopSignals) -> int:
    """Run the command line and return its exit status, whatever breaks its output: a stop
    signal, a reader gone, a terminal gone."""
    try:
        code = run_command_line(argv, stop)
        # Flushed here, not at exit: a reader slow to take the last of the report keeps
        # this waiting, and a signal meanwhile is handled below.
        sys.stdout.flush()
        # A KeyboardInterrupt raised where Python cannot pass it on (a callback of the
        # garbage collector) is only printed; the signal still gives the status.
        return code if stop.received is None else EXIT_SIGNALLED + stop.received
    except KeyboardInterrupt:
        # Before the batch (nothing to report yet), or in the middle of the report.
        return EXIT_SIGNALLED + (stop.received or signal.SIGINT)
    except BrokenPipeError:
        # The reader of the report has gone (`| head`): stop quietly, with the status of a
        # program that SIGPIPE stopped.
        discard_output()
        return EXIT_SIGNALLED + signal.SIGPIPE
    except OSError as error:
        if error.errno != errno.EIO or stop.received is None:
            raise
        # The terminal has gone (which sent the SIGHUP): no one is left to read the report.
        discard_output()
        return EXIT_SIGNALLED + stop.received


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit status (see --help); usage errors exit 2 at once."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        # A file name or a rejected value may hold what a terminal's encoding cannot show
        # (a euro sign in Latin-1): written as an escape like \u20ac, not as an exception.
        sys.stdout.reconfigure(errors="backslashreplace")
    stop = StopSignals()
    try:
        with stop:
            return run_and_report(argv, stop)
    except KeyboardInterrupt:
        # A second signal as the handlers are put back, the first having been handled.
        return EXIT_SIGNALLED + (stop.received or signal.SIGINT)


if __name__ == "__main__":
    status = main()
    # All is written: a stop signal from here on has nothing left to stop. Ignored, it cannot
    # kill the program as it exits, after Python has put back the system's default handlers.
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    raise SystemExit(status)
