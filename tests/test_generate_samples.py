"""generate_samples.py: deterministic, and its malformed rows are the ones the processor rejects."""
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
