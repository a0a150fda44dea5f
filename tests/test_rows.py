"""The pure rules: the header, one data row, and folding rows into a file's statistics."""
from collections import Counter
from decimal import Decimal

import pytest

import csv

from processor import (
    Columns, CsvFormat, FileProblem, FileTally, SimpleRows, Transaction, amount_problem, check_row,
    check_simple_lines, find_columns, is_blank, plain_amount, readable_text, top_category,
)

COLUMNS = Columns(("transaction_id", "customer_id", "amount", "date", "category"), (0, 1, 2, 3, 4))


def row(**changes: str) -> list[str]:
    fields = {"transaction_id": "T1", "customer_id": "C1", "amount": "12.50",
              "date": "2024-03-01", "category": "dining"}
    fields.update(changes)
    return list(fields.values())


def line(**changes: str) -> str:
    return ",".join(row(**changes)) + "\n"


BAD_AMOUNTS = {
    "dollar": "$12.00", "euro": "12.00€", "thousands-comma": "1,000.00", "thousands-space": "1 000",
    "exponent": "1e3", "exponent-upper": "1E3", "NaN": "NaN", "nan": "nan", "Infinity": "Infinity",
    "-inf": "-inf", "two-points": "12.5.1", "arabic-digits": "٤٢", "fullwidth-digits": "１２",
    "space-after-sign": "- 5", "two-signs": "+-1", "lone-point": ".", "lone-sign": "-", "hex": "0x10",
    "underscore": "1_000", "parentheses": "(12.00)", "trailing-sign": "12-",
}
BAD_DATES = {
    "not-a-leap-year": "2023-02-29", "feb-30": "2024-02-30", "month-13": "2024-13-01",
    "month-0": "2024-00-10", "april-31": "2024-04-31", "year-0": "0000-01-01",
    "one-digit-month": "2024-1-05", "slashes": "2024/01/05", "no-dashes": "20240105",
    "with-time": "2024-01-05T10:00", "day-first": "05-01-2024", "fullwidth": "２０２４-01-05",
    "week-date": "2024-W01-1", "word": "yesterday",
}


# --- The header ---

def test_columns_are_found_in_any_order_case_and_spacing_with_extras_ignored():
    header = [" Category", "AMOUNT ", "note", "date", "Customer_ID", "transaction_id"]

    columns = find_columns(header)

    assert columns.positions == (5, 4, 1, 3, 0)
    assert len(columns.names) == 6


def test_missing_columns_are_named():
    with pytest.raises(FileProblem, match="amount, date"):
        find_columns(["transaction_id", "customer_id", "price", "day", "category"])


def test_a_header_lacking_a_column_with_undecodable_bytes_suggests_another_encoding():
    with pytest.raises(FileProblem) as problem:
        find_columns(["transaction_id", "customer\udcff_id", "amount", "date", "category"],
                     CsvFormat(encoding="cp1252"))

    assert str(problem.value) == ("Header lacks required column(s): customer_id; the header does "
                                  "not read as cp1252 text, so the file may be in another "
                                  "encoding: try --encoding")


def test_an_undecodable_extra_column_name_is_no_problem():
    columns = find_columns(["transaction_id", "customer_id", "amount", "date", "category",
                            "Hist\udcf3rico"])

    assert columns.positions == (0, 1, 2, 3, 4)


def test_a_repeated_column_name_uses_its_first_column():
    columns = find_columns(["transaction_id", "customer_id", "amount", "amount", "date", "category"])

    assert columns.positions == (0, 1, 2, 4, 5)


# --- One data row ---

@pytest.mark.parametrize("text, decimal_comma, plain", [
    ("12.50", False, "12.50"), ("12,50", False, None), ("12,50", True, "12.50"),
    ("-0,5", True, "-0.5"), ("+1,0", True, "+1.0"), (",25", True, ".25"), ("5,", True, "5."),
    ("12.50", True, None), ("1.234,50", True, None), ("1,2,3", True, None), ("-,", True, None),
    (",", True, None), ("1e3", True, None),
])
def test_an_amount_is_plain_with_the_decimal_mark_of_its_file(text, decimal_comma, plain):
    assert plain_amount(text, decimal_comma=decimal_comma) == plain


@pytest.mark.parametrize("amount, reason", [
    ("12,50", "amount '12,50' is not a plain decimal number (written with a decimal comma? "
              "try --decimal-comma)"),
    ("1,234.50", "amount '1,234.50' is not a plain decimal number"),  # thousands: no hint
    ("1,250", "amount '1,250' is not a plain decimal number"),  # thousands, or 1.25: no hint
    ("-0,5", "amount '-0,5' is not a plain decimal number (written with a decimal comma? "
             "try --decimal-comma)"),
    ("$12", "amount '$12' is not a plain decimal number"),
])
def test_an_amount_with_a_decimal_comma_gets_a_hint_only_where_it_would_help(amount, reason):
    assert amount_problem(amount, decimal_comma=False) == reason


def test_with_a_decimal_comma_a_row_is_read_exactly_and_a_point_is_refused():
    columns = COLUMNS._replace(format=CsvFormat(decimal_comma=True))

    assert check_row(row(amount="-1234,05"), columns) == Transaction(Decimal("-1234.05"),
                                                                     "2024-03-01", "dining")
    assert check_row(row(amount="12.50"), columns) == ("amount '12.50' is not a plain decimal "
                                                       "number with a decimal comma")

@pytest.mark.parametrize("amount, expected", [
    ("12", "12"), ("12.5", "12.5"), ("-3.00", "-3.00"), (".5", "0.5"), ("4.", "4"),
    ("+7.25", "7.25"), (" 8.10 ", "8.10"), ("0", "0"),
], ids=["integer", "one-decimal", "negative", "leading-point", "trailing-point", "plus-sign",
        "surrounding-spaces", "zero"])
def test_plain_decimal_amount_is_accepted_exactly(amount, expected):
    assert check_row(row(amount=amount), COLUMNS) == Transaction(Decimal(expected), "2024-03-01", "dining")


@pytest.mark.parametrize("amount", BAD_AMOUNTS.values(), ids=BAD_AMOUNTS.keys())
def test_amount_that_is_not_plain_decimal_is_rejected(amount):
    reason = check_row(row(amount=amount), COLUMNS)

    assert isinstance(reason, str)
    assert reason.startswith("amount ")


@pytest.mark.parametrize("day", ["2024-02-29", "2023-12-31", "0001-01-01", " 2024-03-01 "],
                         ids=["leap-day", "year-end", "year-one", "spaces"])
def test_real_iso_date_is_accepted(day):
    assert isinstance(check_row(row(date=day), COLUMNS), Transaction)


@pytest.mark.parametrize("day", BAD_DATES.values(), ids=BAD_DATES.keys())
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


def test_the_reason_for_an_undecodable_byte_names_the_file_s_encoding_and_column():
    columns = Columns(("transaction_id", "customer_id", "amount", "date", "category",
                       "libell\udce9"), (0, 1, 2, 3, 4), CsvFormat(encoding="cp1252"))

    assert check_row(row() + ["caf\udc81"], columns) == "libell\\xe9: not valid cp1252"


@pytest.mark.parametrize("text, readable", [
    ("plain", "plain"), ("caf\udce9", "caf\\xe9"), ("a\udc05b", "a\\x05b"), ("€", "€"),
], ids=["ascii", "byte-from-128", "byte-below-128", "decoded"])
def test_readable_text_writes_each_undecodable_byte_as_x_nn(text, readable):
    assert readable_text(text) == readable


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


# --- A batch of simple lines (the fast path) ---

def test_a_batch_of_simple_valid_lines_gives_its_figures():
    lines = ["T1,C1,12.50,2024-03-05,dining\n", "T2,C2,-0.25,2024-01-20, fuel \r\n",
             "T3,C1,.75,2024-03-05,dining\n"]

    rows = check_simple_lines(lines, COLUMNS, set())

    assert rows == SimpleRows(3, Decimal("13.00"), {"2024-03-05", "2024-01-20"},  # 12.50 - 0.25 + .75
                              ["dining", "fuel", "dining"])


def test_a_batch_with_semicolons_and_decimal_commas_gives_its_figures():
    columns = COLUMNS._replace(format=CsvFormat(delimiter=";", decimal_comma=True))
    lines = ["T1;C1;1,50;2024-01-02;rent\n", "T2;C2;-0,25;2024-01-03;fees\n"]

    rows = check_simple_lines(lines, columns, set())

    assert rows == SimpleRows(2, Decimal("1.25"), {"2024-01-02", "2024-01-03"}, ["rent", "fees"])
    assert check_simple_lines(["T3;C3;1.50;2024-01-02;rent\n"], columns, set()) is None


def test_columns_are_taken_from_where_the_header_put_them():
    columns = find_columns(["note", "category", "date", "amount", "customer_id", "transaction_id"])

    rows = check_simple_lines([",fuel,2024-06-01,40.00,C9,T1\n", "x,fuel,2024-06-02,2,C9,T2\n"],
                              columns, set())

    assert rows == SimpleRows(2, Decimal("42.00"), {"2024-06-01", "2024-06-02"}, ["fuel", "fuel"])


def test_only_dates_not_seen_before_are_new():
    rows = check_simple_lines([line(date="2024-03-01"), line(date="2024-03-02")], COLUMNS,
                              {"2024-03-01"})

    assert rows is not None
    assert rows.new_dates == {"2024-03-02"}


NOT_SIMPLE = {
    "quoted-field": '"T2",C1,1.00,2024-03-01,dining\n',
    "too-many-fields": "T2,C1,1.00,2024-03-01,dining,extra\n",
    "too-few-fields": "T2,C1,1.00,2024-03-01\n",
    "blank-line": "\n",
    "commas-only": ",,,,\n",
    "bare-carriage-return": "T2,C1,1.00,2024-03-01,dining\r",
    "no-final-newline": "T2,C1,1.00,2024-03-01,dining",
    "undecodable-byte": "T2,C1,1.00,2024-03-01,caf\udce9\n",
    "empty-id": line(transaction_id=""),
    "blank-customer": line(customer_id="  "),
    "empty-category": line(category=""),
    "padded-amount": line(amount=" 1.00"),
    "padded-date": line(date="2024-03-01 "),
} | {f"amount-{name}": line(amount=value) for name, value in BAD_AMOUNTS.items()} \
  | {f"date-{name}": line(date=value) for name, value in BAD_DATES.items()}


@pytest.mark.parametrize("odd_line", NOT_SIMPLE.values(), ids=NOT_SIMPLE.keys())
def test_a_batch_with_any_line_not_simple_and_valid_is_left_to_check_row(odd_line):
    # A rejected row, or a valid one the fast path does not read (quotes, padding), sends the
    # whole batch to check_row, which gives the row's reason or reads it right.
    assert check_simple_lines([line(), odd_line, line()], COLUMNS, set()) is None


def test_lines_that_only_between_them_have_the_right_field_count_are_left_to_check_row():
    lines = ["T1,C1,1.00,2024-03-01\n", "T2,C1,1.00,2024-03-01,dining,extra\n"]  # 4 + 6 = 2 x 5

    assert check_simple_lines(lines, COLUMNS, set()) is None


def test_a_batch_longer_than_the_csv_field_limit_is_left_to_check_row():
    limit = csv.field_size_limit(20)
    try:
        assert check_simple_lines([line(category="a" * 21)], COLUMNS, set()) is None
    finally:
        csv.field_size_limit(limit)


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
        tally.reject(line, "date is empty", ["T1", "C1", "9.99", "", "fuel"])

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
