"""generate_samples.py: deterministic, its malformed rows are the ones the processor rejects, and
what it cannot do is one error line, never a traceback."""
import os
from pathlib import Path

import pytest

import generate_samples
from processor import process_file

SAMPLE_DATA = Path(__file__).resolve().parent.parent / "sample_data"


def test_default_run_reproduces_the_committed_sample_data_byte_for_byte(tmp_path, capsys):
    generate_samples.main(["--out", str(tmp_path)])

    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == sorted(path.name for path in SAMPLE_DATA.glob("*.csv"))
    for name in written:
        assert (tmp_path / name).read_bytes() == (SAMPLE_DATA / name).read_bytes(), name


def test_another_seed_gives_other_data(tmp_path):
    generate_samples.main(["--out", str(tmp_path / "a"), "--files", "1", "--rows", "50"])
    generate_samples.main(["--out", str(tmp_path / "b"), "--files", "1", "--rows", "50", "--seed", "7"])

    name = "transactions_001.csv"
    assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "b" / name).read_bytes()


@pytest.mark.asyncio
async def test_files_hold_the_asked_rows_and_only_the_first_the_bad_ones(tmp_path):
    paths = generate_samples.write_samples(tmp_path, seed=1, files=2, rows=300, bad_rows=8)

    first, second = [await process_file(str(path), delay=0) for path in paths]

    assert (first["total_transactions"], first["invalid_rows"]) == (150, 8)
    assert (second["total_transactions"], second["invalid_rows"]) == (300, 0)
    reasons = " ".join(error["reason"] for error in first["row_errors"])
    for named in ["amount", "date", "customer_id", "fields"]:
        assert named in reasons


HEADER_LINE = b"transaction_id,customer_id,amount,date,category\n"


@pytest.mark.parametrize("bad_rows", [[], ["--bad-rows", "5"]],
                         ids=["default bad rows", "--bad-rows 5"])
def test_rows_0_writes_header_only_files(tmp_path, bad_rows):
    code = generate_samples.main(["--out", str(tmp_path), "--files", "2", "--rows", "0",
                                  *bad_rows])

    assert code == 0
    assert (tmp_path / "transactions_001.csv").read_bytes() == HEADER_LINE
    assert (tmp_path / "transactions_002.csv").read_bytes() == HEADER_LINE


def error_output(capsys, *argv: str) -> str:
    """Run main, which must exit 2 and write nothing to stdout; return what it wrote to stderr."""
    with pytest.raises(SystemExit) as exited:
        generate_samples.main(list(argv))
    out, err = capsys.readouterr()
    assert (exited.value.code, out) == (2, "")
    return err


@pytest.mark.parametrize("option, value, message", [
    ("--files", "0", "argument --files: must be 1 or more, not 0"),
    ("--files", "-2", "argument --files: must be 1 or more, not -2"),
    ("--rows", "-1", "argument --rows: must be 0 or more, not -1"),
    ("--bad-rows", "-1", "argument --bad-rows: must be 0 or more, not -1"),
], ids=["no files", "negative files", "negative rows", "negative bad rows"])
def test_an_unusable_number_is_a_usage_error(tmp_path, capsys, option, value, message):
    err = error_output(capsys, "--out", str(tmp_path / "out"), option, value)

    assert err.startswith("usage: generate_samples.py ")
    assert err.splitlines()[-1] == f"generate_samples.py: error: {message}"
    assert not (tmp_path / "out").exists()


def test_out_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a folder\n")

    err = error_output(capsys, "--out", str(notes))

    assert err == (f"generate_samples.py: error: cannot write to {notes}: "
                   "it is a file, not a folder\n")


def test_out_that_cannot_be_created_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a folder\n")
    out = tmp_path / "notes.txt" / "samples"

    err = error_output(capsys, "--out", str(out))

    assert err == f"generate_samples.py: error: cannot write {out}: Not a directory\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in a read-only folder")
def test_out_that_cannot_be_written_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "read-only"
    out.mkdir(mode=0o555)

    err = error_output(capsys, "--out", str(out))

    assert err == (f"generate_samples.py: error: cannot write {out}/transactions_001.csv: "
                   "Permission denied\n")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, a disk always full")
def test_a_failed_write_is_a_one_line_error_and_keeps_the_files_before_it(tmp_path, capsys):
    (tmp_path / "transactions_002.csv").symlink_to("/dev/full")

    err = error_output(capsys, "--out", str(tmp_path), "--files", "2", "--rows", "10")

    assert err == (f"generate_samples.py: error: cannot write {tmp_path}/transactions_002.csv: "
                   "No space left on device\n")
    assert (tmp_path / "transactions_001.csv").read_bytes().startswith(HEADER_LINE)
