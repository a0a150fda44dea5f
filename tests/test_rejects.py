"""--rejects: every rejected row kept, with its line and reason, in a file an analyst can open."""
import asyncio
import csv
import json
import os
import signal
import subprocess
import sys

import pytest

import processor
from processor import (RejectsFile, RejectsUnusable, keep_rejects, main, process_batch,
                       process_file, rejects_names, spreadsheet_safe)

HEADER = "transaction_id,customer_id,amount,date,category\n"
REJECTS_HEADER = ["line", "reason", "transaction_id", "customer_id", "amount", "date", "category"]


def read_rows(path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as file:
        return list(csv.reader(file))


def bad_dates(count: int) -> str:
    return "".join(f"T{n},C{n},1.00,2024-02-30,fuel\n" for n in range(count))


async def batch_keeping_rejects(filenames: list[str], folder, *, delay: float = 0,
                                **options) -> dict:
    """Run a batch that keeps every rejected row in folder, as --rejects does."""
    return await process_batch(filenames, delay=delay, **options,
                               read_file=keep_rejects(folder, filenames))


# --- Naming the rejects files ---

@pytest.mark.parametrize("filenames, names", [
    (["a/x.csv", "b/y.csv"], ["x.rejects.csv", "y.rejects.csv"]),
    (["a/x.csv", "b/x.csv", "c/x.csv"], ["x.rejects.csv", "x-2.rejects.csv", "x-3.rejects.csv"]),
    (["a/x.csv", "b/X.csv"], ["x.rejects.csv", "X-2.rejects.csv"]),
    (["a/x.csv", "b/x.csv", "c/x-2.csv"], ["x.rejects.csv", "x-2.rejects.csv", "x-2-2.rejects.csv"]),
    (["a/x.csv", "b/x.txt", "notes"], ["x.rejects.csv", "x-2.rejects.csv", "notes.rejects.csv"]),
], ids=["distinct", "same-name-three-times", "differ-only-in-case", "taken-by-another-input",
        "other-extensions"])
def test_each_input_gets_its_own_rejects_file_name(filenames, names):
    assert list(rejects_names(filenames).values()) == names


# --- Spreadsheet safety ---

@pytest.mark.parametrize("value, written", [
    ("=1+1", "'=1+1"), ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
    ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("+cmd", "'+cmd"), ("-cmd", "'-cmd"), ("-", "'-"), ("-2+3", "'-2+3"),
    ("-3.00", "-3.00"), ("+12.5", "+12.5"), ("-.5", "-.5"),
    ("a=b", "a=b"), ("dining", "dining"), ("", ""), (" =1", " =1"),
], ids=["equals", "hyperlink", "at", "tab", "carriage-return", "plus-word", "minus-word",
        "lone-minus", "sum-after-minus", "negative-amount", "positive-amount", "minus-point",
        "equals-inside", "word", "empty", "space-first"])
def test_a_field_a_spreadsheet_would_run_gets_a_leading_quote(value, written):
    assert spreadsheet_safe(value) == written


# --- What a rejects file holds ---

@pytest.mark.asyncio
async def test_every_kind_of_rejected_row_is_kept_with_its_line_reason_and_fields(
        write_csv, tmp_path):
    path = write_csv("every.csv", HEADER.encode() + (
        b"T1,C1,10.00,2024-01-05,dining\n"             # line 2, valid
        b",C2,1.00,2024-01-05,fuel\n"                  # 3
        b"T3,,1.00,2024-01-05,fuel\n"                  # 4
        b"T4,C4,$5,2024-01-05,fuel\n"                  # 5
        b"T5,C5,,2024-01-05,fuel\n"                    # 6
        b"T6,C6,1.00,2024-02-30,fuel\n"                # 7
        b"T7,C7,1.00,2024-01-05, \n"                   # 8
        b"T8,C8,1.00,2024-01-05\n"                     # 9, a field too few
        b"T9,C9,1.00,2024-01-05,fuel,extra\n"          # 10, a field too many
        b'T10,C10,1e3,2024-01-05,"two\nlines"\n'       # 11 and 12
        b"T11,C11,1.00,2024-01-05,caf\xe9\n"           # 13, a byte that is not UTF-8
        b'T12,C12,1.00,2024-01-05,"' + b"x" * 120 + b'"\n'  # 14, over the limit set below
        b"T13,C13,2.50,2024-01-06,fuel\n"))            # 15, valid
    folder = tmp_path / "rejects"
    limit = csv.field_size_limit(100)
    try:
        batch = await batch_keeping_rejects([path], folder)
    finally:
        csv.field_size_limit(limit)

    result = batch["results"][path]
    assert (result["total_transactions"], result["invalid_rows"]) == (2, 11)
    assert result["rejects_file"] == str(folder / "every.rejects.csv")
    assert read_rows(folder / "every.rejects.csv") == [
        REJECTS_HEADER,
        ["3", "transaction_id is empty", "", "C2", "1.00", "2024-01-05", "fuel"],
        ["4", "customer_id is empty", "T3", "", "1.00", "2024-01-05", "fuel"],
        ["5", "amount '$5' is not a plain decimal number", "T4", "C4", "$5", "2024-01-05", "fuel"],
        ["6", "amount is empty", "T5", "C5", "", "2024-01-05", "fuel"],
        ["7", "date '2024-02-30' is not a real YYYY-MM-DD date",
         "T6", "C6", "1.00", "2024-02-30", "fuel"],
        ["8", "category is empty", "T7", "C7", "1.00", "2024-01-05", " "],
        ["9", "has 4 fields, the header has 5", "T8", "C8", "1.00", "2024-01-05"],
        ["10", "has 6 fields, the header has 5", "T9", "C9", "1.00", "2024-01-05", "fuel", "extra"],
        ["11", "amount '1e3' is not a plain decimal number",
         "T10", "C10", "1e3", "2024-01-05", "two\nlines"],
        ["13", "category: not valid UTF-8", "T11", "C11", "1.00", "2024-01-05", "caf\\xe9"],
        ["14", "cannot be read as CSV: field larger than field limit (100)", "", "", "", "", ""],
    ]
    assert os.listdir(folder) == ["every.rejects.csv"]  # no temporary file left


@pytest.mark.asyncio
async def test_all_rejected_rows_are_kept_not_only_the_hundred_listed(write_csv, tmp_path):
    path = write_csv("many.csv", HEADER + bad_dates(150))

    batch = await batch_keeping_rejects([path], tmp_path / "rejects")

    rows = read_rows(tmp_path / "rejects" / "many.rejects.csv")
    assert len(batch["results"][path]["row_errors"]) == 100
    assert len(rows) == 151  # the header and 150 rows
    assert [row[0] for row in rows[1:]] == [str(line) for line in range(2, 152)]
    assert rows[150] == ["151", "date '2024-02-30' is not a real YYYY-MM-DD date",
                         "T149", "C149", "1.00", "2024-02-30", "fuel"]


@pytest.mark.asyncio
async def test_formula_fields_are_neutralised_and_numbers_are_not(write_csv, tmp_path):
    path = write_csv("formulas.csv",
                     "transaction_id,customer_id,amount,date,category,=note\n"
                     "=1+1,@SUM(A1),-3.00,2024-02-30,+cmd,-x\n")

    await batch_keeping_rejects([path], tmp_path / "rejects")

    assert read_rows(tmp_path / "rejects" / "formulas.rejects.csv") == [
        [*REJECTS_HEADER, "'=note"],
        ["2", "date '2024-02-30' is not a real YYYY-MM-DD date",
         "'=1+1", "'@SUM(A1)", "-3.00", "2024-02-30", "'+cmd", "'-x"],
    ]


@pytest.mark.asyncio
async def test_a_file_with_no_rejected_rows_gets_no_rejects_file(write_csv, tmp_path):
    path = write_csv("clean.csv", HEADER + "T1,C1,1.00,2024-01-01,fuel\n")
    failed = write_csv("empty.csv", "")

    batch = await batch_keeping_rejects([path, failed], tmp_path / "rejects")

    assert batch["results"][path]["rejects_file"] is None
    assert batch["results"][failed]["rejects_file"] is None
    assert os.listdir(tmp_path / "rejects") == []


@pytest.mark.asyncio
async def test_two_inputs_with_the_same_name_get_two_rejects_files(tmp_path):
    (tmp_path / "march").mkdir()
    (tmp_path / "april").mkdir()
    march = tmp_path / "march" / "client.csv"
    april = tmp_path / "april" / "client.csv"
    march.write_text(HEADER + "M1,C1,$1,2024-03-01,fuel\n")
    april.write_text(HEADER + "A1,C1,1.00,2024-04-31,fuel\n")
    folder = tmp_path / "rejects"

    batch = await batch_keeping_rejects([str(march), str(april)], folder)

    assert batch["results"][str(march)]["rejects_file"] == str(folder / "client.rejects.csv")
    assert batch["results"][str(april)]["rejects_file"] == str(folder / "client-2.rejects.csv")
    assert read_rows(folder / "client.rejects.csv")[1][2] == "M1"
    assert read_rows(folder / "client-2.rejects.csv")[1][2] == "A1"


# --- Only complete files get a final name ---

@pytest.mark.asyncio
async def test_a_batch_cancelled_mid_file_leaves_no_rejects_file_for_that_file(write_csv, tmp_path):
    # The first 100 rows are read before the file's first pause, so its temporary file exists
    # then; the long pause keeps the file unfinished until the test cancels the batch.
    path = write_csv("long.csv", HEADER + bad_dates(1000))
    folder = tmp_path / "rejects"
    batch = asyncio.create_task(batch_keeping_rejects([path], folder, delay=60))
    for _ in range(100):
        await asyncio.sleep(0)
        if folder.exists() and os.listdir(folder):
            break
    assert [name.endswith(".tmp") for name in os.listdir(folder)] == [True]

    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch

    assert os.listdir(folder) == []


@pytest.mark.asyncio
async def test_a_file_that_changed_while_read_gets_no_rejects_file(write_csv, tmp_path,
                                                                   change_mid_read):
    path = write_csv("growing.csv", HEADER + bad_dates(150))

    def append() -> None:  # the client is still writing while the file is read
        with open(path, "a") as file:
            file.write("Z1,C1,1.00,2024-13-01,fuel\n")

    change_mid_read(append)

    batch = await batch_keeping_rejects([path], tmp_path / "rejects")

    result = batch["results"][path]
    assert (result["status"], result["rejects_file"]) == ("error", None)
    assert result["error"].startswith("Changed while being read")
    assert os.listdir(tmp_path / "rejects") == []  # neither a rejects file nor a temporary one


@pytest.mark.asyncio
async def test_a_retried_file_keeps_only_the_rows_of_its_last_attempt(
        write_csv, tmp_path, change_mid_read):
    path = write_csv("growing.csv", HEADER + bad_dates(150))

    def append() -> None:  # the client is still writing while the first attempt reads
        with open(path, "a") as file:
            file.write("Z1,C1,1.00,2024-13-01,fuel\n")

    change_mid_read(append)

    batch = await batch_keeping_rejects([path], tmp_path / "rejects", retries=1, retry_delay=0)

    result = batch["results"][path]
    rows = read_rows(tmp_path / "rejects" / "growing.rejects.csv")
    assert (result["status"], result["attempts"], result["invalid_rows"]) == ("completed", 2, 151)
    assert len(rows) == 152  # the header, the 150 rows once, and the row added
    assert rows[-1][:3] == ["152", "date '2024-13-01' is not a real YYYY-MM-DD date", "Z1"]
    assert os.listdir(tmp_path / "rejects") == ["growing.rejects.csv"]


@pytest.mark.asyncio
async def test_rejected_rows_that_cannot_be_written_fail_their_file_with_the_reason(
        write_csv, tmp_path):
    path = write_csv("bad.csv", HEADER + bad_dates(1))
    gone = str(tmp_path / "gone" / "bad.rejects.csv")  # its folder was never made
    result = await process_file(path, delay=0, on_rejected=RejectsFile(gone).write)

    assert result["status"] == "error"
    assert result["error"] == f"Cannot write its rejected rows to {gone}: No such file or directory"
    assert result["retryable"] is False


# --- An unusable folder ---

def test_a_folder_that_cannot_be_made_is_refused_as_the_reader_is_made(write_csv):
    path = write_csv("bad.csv", HEADER + bad_dates(1))

    with pytest.raises(RejectsUnusable, match="cannot write rejected rows to .*: Not a directory"):
        keep_rejects(os.path.join(path, "rejects"), [path])


def test_a_read_only_folder_exits_2_with_a_one_line_message(write_csv, tmp_path, capsys):
    path = write_csv("bad.csv", HEADER + bad_dates(1))
    folder = tmp_path / "rejects"
    folder.mkdir(mode=0o555)

    with pytest.raises(SystemExit) as stopped:
        main(["--delay", "0", "--rejects", str(folder), path])

    out, err = capsys.readouterr()
    assert stopped.value.code == 2
    assert out == ""
    assert err == f"processor.py: error: cannot write rejected rows to {folder}: Permission denied\n"
    assert os.listdir(folder) == []


def test_a_file_where_the_folder_should_be_exits_2_with_a_one_line_message(write_csv, capsys):
    path = write_csv("bad.csv", HEADER + bad_dates(1))

    with pytest.raises(SystemExit) as stopped:
        main(["--delay", "0", "--rejects", path, path])  # a file where the folder should be

    out, err = capsys.readouterr()
    assert stopped.value.code == 2
    assert out == ""
    assert err == (f"processor.py: error: cannot write rejected rows to {path}: "
                   "it is a file, not a folder\n")


# --- The command line ---

def test_the_report_names_each_rejects_file_and_json_gives_its_path(write_csv, tmp_path, capsys):
    bad = write_csv("bad.csv", HEADER + bad_dates(2))
    clean = write_csv("clean.csv", HEADER + "T1,C1,1.00,2024-01-01,fuel\n")
    folder = str(tmp_path / "rejects")

    code = main(["--delay", "0", "--rejects", folder, bad, clean])
    report = capsys.readouterr().out
    main(["--json", "--delay", "0", "--rejects", folder, bad, clean])
    results = json.loads(capsys.readouterr().out)["results"]

    assert code == 0
    assert f"  all of them are in {folder}/bad.rejects.csv\n" in report
    assert results[bad]["rejects_file"] == f"{folder}/bad.rejects.csv"
    assert results[clean]["rejects_file"] is None


def test_ctrl_c_leaves_no_rejects_file_or_temporary_for_the_unfinished_file(write_csv, tmp_path):
    quick = write_csv("quick.csv", HEADER + bad_dates(2))
    slow = write_csv("slow.csv", HEADER + bad_dates(1000))
    folder = tmp_path / "rejects"
    # SIGINT is ignored in processes started in the background; the program must see it here.
    child = subprocess.Popen(
        [sys.executable, processor.__file__, "--delay", "1", "--rejects", str(folder), quick,
         slow], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in child.stderr:  # the monitor's first line, at 2 s, names the quick file finished
        if "finished:" in line:
            break
    slow_temporaries = [name for name in os.listdir(folder) if name.startswith(".slow.")]

    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=30)

    assert child.returncode == 130
    assert len(slow_temporaries) == 1
    assert os.listdir(folder) == ["quick.rejects.csv"]
    assert "Traceback" not in stderr + stdout


def test_temporaries_of_runs_that_died_are_removed_and_a_live_runs_kept(write_csv, tmp_path):
    folder = tmp_path / "rejects"
    folder.mkdir()
    dead, alive = subprocess.Popen([sys.executable, "-c", "pass"]), os.getpid()
    dead.wait()  # its process id is free now
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    leftovers = [f".a.csv.rejects.csv.{dead.pid}.tmp", f".write-test.{dead.pid}.tmp",
                 f".c.csv.rejects.csv.{alive}.tmp"]  # this run has written none yet
    kept = [f".b.csv.rejects.csv.{running.pid}.tmp", ".notes.tmp",
            f"a.csv.rejects.csv.{dead.pid}.tmp"]
    for name in leftovers + kept:
        (folder / name).write_text("x")
    (folder / f".d.csv.rejects.csv.{dead.pid}.tmp").mkdir()  # not a file: left, and no error

    try:
        keep_rejects(folder, [write_csv("c.csv", "transaction_id\n")])
    finally:
        running.kill()
        running.wait()

    assert sorted(os.listdir(folder)) == sorted([*kept, f".d.csv.rejects.csv.{dead.pid}.tmp"])
