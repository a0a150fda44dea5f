"""The pure rules: the header, one data row, and folding rows into a file's statistics."""
from collections import Counter
from decimal import Decimal

import pytest

from processor import (
    Columns, FileProblem, FileTally, Transaction, check_row, find_columns, is_blank,
    top_category,
)

COLUMNS = Columns(("transaction_id", "customer_id", "amount", "date", "category"), (0, 1, 2, 3, 4))


def row(**changes: str) -> list[str]:
    fields = {"transaction_id": "T1", "customer_id": "C1", "amount": "12.50",
              "date": "2024-03-01", "category": "dining"}
    fields.update(changes)
    return list(fields.values())


# --- The header ---

def test_columns_are_found_in_any_order_case_and_spacing_with_extras_ignored():
    header = [" Category", "AMOUNT ", "note", "date", "Customer_ID", "transaction_id"]

    columns = find_columns(header)

    assert columns.positions == (5, 4, 1, 3, 0)
    assert len(columns.names) == 6


def test_missing_columns_are_named():
    with pytest.raises(FileProblem, match="amount, date"):
        find_columns(["transaction_id", "customer_id", "price", "day", "category"])


def test_header_with_undecodable_bytes_is_a_file_problem():
    with pytest.raises(FileProblem, match="UTF-8"):
        find_columns(["transaction_id", "customer\udcff_id", "amount", "date", "category"])


def test_a_repeated_column_name_uses_its_first_column():
    columns = find_columns(["transaction_id", "customer_id", "amount", "amount", "date", "category"])

    assert columns.positions == (0, 1, 2, 4, 5)


# --- One data row ---

@pytest.mark.parametrize("amount, expected", [
    ("12", "12"), ("12.5", "12.5"), ("-3.00", "-3.00"), (".5", "0.5"), ("4.", "4"),
    ("+7.25", "7.25"), (" 8.10 ", "8.10"), ("0", "0"),
], ids=["integer", "one-decimal", "negative", "leading-point", "trailing-point", "plus-sign",
        "surrounding-spaces", "zero"])
def test_plain_decimal_amount_is_accepted_exactly(amount, expected):
    assert check_row(row(amount=amount), COLUMNS) == Transaction(Decimal(expected), "2024-03-01", "dining")


@pytest.mark.parametrize("amount", [
    "$12.00", "12.00€", "1,000.00", "1 000", "1e3", "1E3", "NaN", "nan", "Infinity", "-inf",
    "12.5.1", "٤٢", "１２", "- 5", "+-1", ".", "-", "0x10", "1_000", "(12.00)", "12-",
], ids=["dollar", "euro", "thousands-comma", "thousands-space", "exponent", "exponent-upper",
        "NaN", "nan", "Infinity", "-inf", "two-points", "arabic-digits", "fullwidth-digits",
        "space-after-sign", "two-signs", "lone-point", "lone-sign", "hex", "underscore",
        "parentheses", "trailing-sign"])
def test_amount_that_is_not_plain_decimal_is_rejected(amount):
    reason = check_row(row(amount=amount), COLUMNS)

    assert isinstance(reason, str)
    assert reason.startswith("amount ")


@pytest.mark.parametrize("day", ["2024-02-29", "2023-12-31", "0001-01-01", " 2024-03-01 "],
                         ids=["leap-day", "year-end", "year-one", "spaces"])
def test_real_iso_date_is_accepted(day):
    assert isinstance(check_row(row(date=day), COLUMNS), Transaction)


@pytest.mark.parametrize("day", [
    "2023-02-29", "2024-02-30", "2024-13-01", "2024-00-10", "2024-04-31", "0000-01-01",
    "2024-1-05", "2024/01/05", "20240105", "2024-01-05T10:00", "05-01-2024", "２０２４-01-05",
    "2024-W01-1", "yesterday",
], ids=["not-a-leap-year", "feb-30", "month-13", "month-0", "april-31", "year-0",
        "one-digit-month", "slashes", "no-dashes", "with-time", "day-first", "fullwidth",
        "week-date", "word"])
def test_date_that_is_not_a_real_yyyy_mm_dd_is_rejected(day):
    reason = check_row(row(date=day), COLUMNS)

    assert isinstance(reason, str)
    assert reason.startswith("date ")


@pytest.mark.parametrize("field_name", ["transaction_id", "customer_id", "amount", "date", "category"])
def test_empty_or_blank_required_field_is_rejected_by_name(field_name):
    assert check_row(row(**{field_name: "  "}), COLUMNS) == f"{field_name} is empty"


@pytest.mark.parametrize("fields", [row()[:4], row() + ["extra"]], ids=["too-few", "too-many"])
def test_row_with_a_different_number_of_fields_than_the_header_is_rejected(fields):
    reason = check_row(fields, COLUMNS)

    assert reason == f"has {len(fields)} fields, the header has 5"


def test_row_with_undecodable_bytes_is_rejected_naming_the_field():
    assert check_row(row(category="caf\udce9"), COLUMNS) == "category: not valid UTF-8"


def test_every_problem_of_a_row_is_given():
    reason = check_row(row(customer_id="", amount="1e3", date="2024-02-30"), COLUMNS)

    assert reason == ("customer_id is empty; amount '1e3' is not a plain decimal number; "
                      "date '2024-02-30' is not a real YYYY-MM-DD date")


def test_values_are_stripped_before_use():
    checked = check_row(row(transaction_id=" T9 ", amount=" 1.50", category="  dining "), COLUMNS)

    assert checked == Transaction(Decimal("1.50"), "2024-03-01", "dining")


def test_a_very_long_value_is_cut_short_in_the_reason():
    reason = check_row(row(amount="9" * 1000 + "x"), COLUMNS)

    assert isinstance(reason, str)
    assert len(reason) < 100


@pytest.mark.parametrize("fields, blank", [
    ([], True), (["", "", "", "", ""], True), ([" ", "\t", "", "  ", ""], True),
    (["", "", "", "", "x"], False),
], ids=["empty-line", "commas-only", "whitespace-only", "one-value"])
def test_blank_records_are_those_with_only_empty_or_whitespace_fields(fields, blank):
    assert is_blank(fields) is blank


# --- Folding rows into a file's statistics ---

def test_tally_sums_exactly_and_tracks_count_categories_and_dates():
    tally = FileTally()

    for amount, day, category in [("0.10", "2024-05-02", "dining"), ("0.20", "2024-01-09", "fuel"),
                                  ("-0.05", "2024-11-30", "dining")]:
        tally.add(Transaction(Decimal(amount), day, category))

    assert tally.count == 3
    assert tally.total == Decimal("0.25")  # 0.10 + 0.20 - 0.05
    assert (tally.earliest, tally.latest) == ("2024-01-09", "2024-11-30")
    assert tally.categories == Counter({"dining": 2, "fuel": 1})


def test_tally_counts_every_rejected_row_but_lists_only_the_first_hundred():
    tally = FileTally()

    for line in range(2, 152):
        tally.reject(line, "date is empty")

    assert tally.invalid_rows == 150
    assert len(tally.row_errors) == 100
    assert tally.row_errors[0] == {"line": 2, "reason": "date is empty"}
    assert tally.row_errors[-1] == {"line": 101, "reason": "date is empty"}


def test_fold_skips_blank_records_and_rejects_invalid_ones():
    tally = FileTally()

    tally.fold(2, ["", " ", "", "", ""], COLUMNS)
    tally.fold(3, row(amount="1e3"), COLUMNS)
    tally.fold(4, row(), COLUMNS)

    assert (tally.count, tally.invalid_rows) == (1, 1)
    assert tally.row_errors == [{"line": 3, "reason": "amount '1e3' is not a plain decimal number"}]


def test_top_category_tie_goes_to_the_smallest_name():
    assert top_category(Counter({"groceries": 2, "dining": 2, "travel": 1})) == "dining"


def test_categories_differing_in_case_are_different_and_tie_by_code_point():
    assert top_category(Counter({"dining": 1, "Dining": 1})) == "Dining"


def test_no_top_category_without_rows():
    assert top_category(Counter()) is None
