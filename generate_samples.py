"""Write sample transaction CSV files for processor.py, the same ones every time for a given seed.

Usage: python generate_samples.py [--out DIR] [--seed N] [--files N] [--rows N] [--bad-rows N]

With no options it rewrites exactly the committed sample_data/ (a test checks it byte for byte):
six files of 600 to 3,600 rows, the first with eight malformed rows mixed in. --rows 0 writes
header-only files. Exit status 0, or 2 with an error line on stderr when an option is unusable
or a file cannot be written (the files written before it are kept):

    generate_samples.py: error: cannot write to /etc/passwd: it is a file, not a folder
"""

import argparse
import csv
import random
from datetime import date, timedelta
from pathlib import Path
from typing import Callable, Iterable, Iterator

HEADER = ["transaction_id", "customer_id", "amount", "date", "category"]
FIRST_DAY = date(2024, 1, 1)
DAYS = 366  # 2024 is a leap year
CUSTOMERS = 400
REFUND_SHARE = 0.04

# Category: (smallest, largest amount in cents, how common it is).
CATEGORIES = {
    "groceries": (350, 25000, 30),
    "dining": (800, 15000, 18),
    "fuel": (2000, 12000, 10),
    "subscriptions": (499, 2999, 8),
    "utilities": (3000, 30000, 6),
    "clothing": (1500, 40000, 6),
    "electronics": (1999, 250000, 5),
    "entertainment": (1000, 20000, 5),
    "healthcare": (1500, 80000, 4),
    "home": (999, 150000, 4),
    "travel": (5000, 300000, 2),
    "education": (2000, 200000, 2),
}

# Each malformation puts one bad value into an otherwise good row (None drops the field),
# so that every one breaks a different rule of a valid row.
MALFORMATIONS = [
    (2, "$45.10"),      # a currency symbol in the amount
    (2, "1,299.00"),    # a thousands separator
    (3, "2024-02-30"),  # a day that does not exist
    (3, "03/15/2024"),  # not YYYY-MM-DD
    (1, ""),            # no customer
    (4, None),          # one field short
    (2, "NaN"),         # not a number
    (2, "1.5e3"),       # an exponent
]


def good_row(rng: random.Random, file_number: int, row_number: int) -> list[str]:
    """Return one realistic transaction: two-decimal amount, a few refunds, dates across 2024."""
    category = rng.choices(list(CATEGORIES), weights=[w for _, _, w in CATEGORIES.values()])[0]
    low, high, _ = CATEGORIES[category]
    cents = rng.randint(low, high)
    sign = "-" if rng.random() < REFUND_SHARE else ""
    return [
        f"T{file_number:03d}-{row_number:06d}",
        f"C{rng.randint(1, CUSTOMERS):04d}",
        f"{sign}{cents // 100}.{cents % 100:02d}",
        (FIRST_DAY + timedelta(days=rng.randrange(DAYS))).isoformat(),
        category,
    ]


def spoil(row: list[str], malformation: tuple[int, str | None]) -> list[str]:
    """Return the row with one malformation applied."""
    column, value = malformation
    if value is None:
        return row[:column] + row[column + 1:]
    return row[:column] + [value] + row[column + 1:]


def sample_rows(rng: random.Random, file_number: int, rows: int,
                bad_rows: int = 0) -> Iterator[list[str]]:
    """Yield `rows` good rows with `bad_rows` malformed ones mixed in at random places."""
    total = rows + bad_rows
    bad_positions = sorted(rng.sample(range(total), bad_rows))
    malformations = dict(zip(bad_positions, (MALFORMATIONS[i % len(MALFORMATIONS)]
                                             for i in range(bad_rows))))
    for position in range(total):
        row = good_row(rng, file_number, position + 1)
        yield spoil(row, malformations[position]) if position in malformations else row


def write_csv(path: Path, rows: Iterable[list[str]]) -> None:
    """Write the header and the rows, with \\n line endings; an OSError raised names the path."""
    try:
        with open(path, "w", encoding="utf-8", newline="") as file:
            writer = csv.writer(file, lineterminator="\n")
            writer.writerow(HEADER)
            writer.writerows(rows)
    except OSError as error:
        error.filename = str(path)  # a failed open names its file, a failed write does not
        raise


def write_samples(out: Path, *, seed: int, files: int, rows: int, bad_rows: int) -> list[Path]:
    """Write `files` files with rows/files, 2*rows/files, ... rows; the first also gets the bad
    rows, mixed in among its good ones, if it has any."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for number in range(1, files + 1):
        path = out / f"transactions_{number:03d}.csv"
        size = round(rows * number / files)
        write_csv(path, sample_rows(rng, number, size, bad_rows if number == 1 and size else 0))
        paths.append(path)
    return paths


def at_least(least: int) -> Callable[[str], int]:
    """Return an argparse type for a whole number no smaller than `least`."""
    def count(text: str) -> int:
        value = int(text)
        if value < least:
            raise argparse.ArgumentTypeError(f"must be {least} or more, not {value}")
        return value
    return count


def main(argv: list[str] | None = None) -> int:
    """Write the sample files and name them on stdout; return 0, or exit 2 if an option is
    unusable or a file cannot be written."""
    parser = argparse.ArgumentParser(
        prog="generate_samples.py",
        description="Write deterministic sample transaction CSV files for processor.py. "
                    "With no options it rewrites exactly the committed sample_data/.")
    parser.add_argument("--out", type=Path, default=Path("sample_data"), metavar="DIR",
                        help="folder to write into, created if missing (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=2024,
                        help="random seed: the same seed gives the same files (default: %(default)s)")
    parser.add_argument("--files", type=at_least(1), default=6, metavar="N",
                        help="number of files (default: %(default)s)")
    parser.add_argument("--rows", type=at_least(0), default=3600, metavar="N",
                        help="good rows in the largest file; file k of n gets k/n of them "
                             "(default: %(default)s)")
    parser.add_argument("--bad-rows", type=at_least(0), default=8, metavar="N",
                        help="malformed rows mixed into the first file, one kind of mistake "
                             "after another; none with --rows 0 (default: %(default)s)")
    args = parser.parse_args(argv)
    # A path that cannot be written is one line, as parser.error writes it but without the
    # usage: the options themselves were well formed.
    try:
        paths = write_samples(args.out, seed=args.seed, files=args.files, rows=args.rows,
                              bad_rows=args.bad_rows)
    except FileExistsError:
        parser.exit(2, f"{parser.prog}: error: cannot write to {args.out}: it is a file, "
                       "not a folder\n")
    except OSError as error:
        parser.exit(2, f"{parser.prog}: error: cannot write {error.filename}: "
                       f"{error.strerror or error}\n")
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
