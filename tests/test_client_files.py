"""Files as clients send them: other encodings and delimiters, decimal commas, gzip, standard
input, one file under several names. Every expected figure is worked out by hand."""
import asyncio
import codecs
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import processor
from processor import (ClientFiles, CsvFormat, choose_codec, delimiter_character,
                       file_identity, guess_delimiter, process_file, read_header_lines)

PROCESSOR = str(Path(__file__).resolve().parent.parent / "processor.py")
HEADER = "transaction_id,customer_id,amount,date,category\n"


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, PROCESSOR, "--delay", "0", *args], input=stdin,
                          capture_output=True, timeout=60)


def json_results(done: subprocess.CompletedProcess) -> dict:
    return json.loads(done.stdout)["results"]


async def read(path: str, **options) -> dict:
    """Process the file as the command line does, with its reading options."""
    return await process_file(path, delay=0, open_input=ClientFiles(**options).open_input)


# --- The pure parts ---

@pytest.mark.parametrize("start, asked, chosen", [
    (codecs.BOM_UTF32_LE + b"t", "cp1252", ("utf-32", "UTF-32")),  # not taken for UTF-16's
    (codecs.BOM_UTF16_LE + b"t\0", "cp1252", ("utf-16", "UTF-16")),
    (codecs.BOM_UTF16_BE + b"\0t", "utf-8", ("utf-16", "UTF-16")),
    (codecs.BOM_UTF8 + b"t", "latin-1", ("utf-8-sig", "UTF-8")),
    (b"tran", "UTF8", ("utf-8-sig", "UTF-8")),
    (b"tran", "cp1252", ("cp1252", "cp1252")),
    (b"", "latin-1", ("latin-1", "latin-1")),
])
def test_a_byte_order_mark_chooses_the_codec_else_the_encoding_asked_for(start, asked, chosen):
    assert choose_codec(start, asked) == chosen


def test_header_lines_run_to_the_first_line_with_more_than_blanks_and_on_through_its_quotes():
    lines = ["\n", ";;;;\n", '" "\n', '""\n', "\u3000\n", 'transaction_id;"customer\n',
             'id";amount\n', "T1;C1;2\n"]

    assert read_header_lines(iter(lines)) == lines[:7]


def test_blank_lines_before_the_header_do_not_stop_the_search_for_it():
    lines = ["\n"] * 5000 + ["transaction_id;customer_id\n", "T1;C1\n"]

    assert read_header_lines(iter(lines)) == lines[:-1]


@pytest.mark.parametrize("header, delimiter", [
    ("transaction_id,customer_id,amount,date,category\n", ","),
    ("transaction_id;customer_id;amount;date;category\n", ";"),
    ("transaction_id\tcustomer_id\tamount\tdate\tcategory\n", "\t"),
    ("transaction_id|customer_id|amount|date|category\n", "|"),
    # Every name at commas and at semicolons too: the comma is never second-guessed.
    ("transaction_id,customer_id,amount,date,category,x;transaction_id;customer_id;amount;date;category\n", ","),
    ("", ","),  # no header at all: the comma's reader will say the file is empty
])
def test_the_delimiter_is_the_one_that_gives_every_required_column(header, delimiter):
    assert guess_delimiter([header], CsvFormat()) == delimiter


def test_file_identity_is_the_device_and_inode_for_a_file_and_the_name_otherwise(tmp_path):
    (tmp_path / "x.csv").write_text(HEADER)
    os.symlink(tmp_path / "x.csv", tmp_path / "link.csv")
    stats = os.stat(tmp_path / "x.csv")

    assert file_identity(str(tmp_path / "link.csv")) == (stats.st_dev, stats.st_ino)
    assert file_identity(str(tmp_path / "missing.csv")) == str(tmp_path / "missing.csv")
    assert file_identity("-") == "-"


@pytest.mark.parametrize("text, delimiter", [(";", ";"), ("tab", "\t"), ("TAB", "\t"),
                                             ("\\t", "\t"), ("\t", "\t"), (" ", " ")])
def test_a_delimiter_is_one_character_and_a_tab_may_be_named(text, delimiter):
    assert delimiter_character(text) == delimiter


# --- Encodings ---

# A Windows export: a euro sign (0x80 in cp1252) and accents in the description column.
CP1252_EXPORT = ("transaction_id,customer_id,amount,date,category,description\r\n"
                 "T1,C1,10.00,2024-03-01,café,Crème brûlée €\r\n"
                 "T2,C2,2.50,2024-03-02,café,Thé\r\n"
                 "T3,C3,7.00,2024-03-04,transport,Métro\r\n").encode("cp1252")


@pytest.mark.asyncio
async def test_a_cp1252_export_is_read_whole_with_its_encoding(write_csv):
    result = await read(write_csv("export.csv", CP1252_EXPORT), encoding="cp1252")

    assert result["status"] == "completed"
    assert result["total_transactions"] == 3
    assert result["total_amount_exact"] == "19.50"  # 10.00 + 2.50 + 7.00
    assert result["top_category"] == "café"  # decoded: the accent is part of the name
    assert result["invalid_rows"] == 0


@pytest.mark.asyncio
async def test_read_as_utf8_a_cp1252_export_loses_only_the_rows_with_bad_bytes(write_csv):
    result = await read(write_csv("export.csv", CP1252_EXPORT))

    assert result["status"] == "completed"
    assert result["total_transactions"] == 0  # every row has an accent in it
    assert result["row_errors"][0] == {"line": 2,
                                       "reason": "category, description: not valid UTF-8"}
    assert result["invalid_rows"] == 3


@pytest.mark.asyncio
async def test_a_byte_the_chosen_encoding_cannot_decode_rejects_its_row_naming_the_encoding(
        write_csv):
    # 0x81 is one of the five bytes cp1252 leaves undefined.
    path = write_csv("export.csv", HEADER.encode() + b"T1,C1,1.00,2024-01-01,x\x81y\n"
                     + b"T2,C2,2.00,2024-01-02,food\n")

    result = await read(path, encoding="cp1252")

    assert result["row_errors"] == [{"line": 2, "reason": "category: not valid cp1252"}]
    assert result["total_amount_exact"] == "2.00"


UNICODE_TEXT = HEADER + "T1,C1,5.00,2024-05-01,books\nT2,C2,x,2024-05-02,books\nT3,C3,1.25,2024-05-03,tea\n"


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-8"])
@pytest.mark.asyncio
async def test_a_byte_order_mark_chooses_the_encoding_whatever_the_option_says(write_csv, codec):
    mark = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE,
            "utf-32-le": codecs.BOM_UTF32_LE, "utf-8": codecs.BOM_UTF8}[codec]
    path = write_csv("unicode.csv", mark + UNICODE_TEXT.encode(codec))

    result = await read(path, encoding="cp1252")

    assert result["status"] == "completed"
    assert result["total_amount_exact"] == "6.25"  # 5.00 + 1.25
    # Line numbers are lines of the decoded text.
    assert [error["line"] for error in result["row_errors"]] == [3]


@pytest.mark.parametrize("codec, asked", [("utf-16-le", "utf-16"), ("utf-16-be", "utf-16-be"),
                                          ("utf-32-le", "UTF-32")])
@pytest.mark.asyncio
async def test_without_a_mark_utf16_and_utf32_are_little_endian_unless_told(write_csv, codec, asked):
    path = write_csv("unmarked.csv", UNICODE_TEXT.encode(codec))

    result = await read(path, encoding=asked)

    assert result["total_amount_exact"] == "6.25"
    assert result["row_errors"][0]["line"] == 3


@pytest.mark.asyncio
async def test_a_gzipped_file_not_named_gz_says_so(write_csv):
    result = await read(write_csv("packed.csv", gzip.compress(UNICODE_TEXT.encode())))

    assert result["status"] == "error"
    assert result["error"] == ("Compressed with gzip: a file must be named .gz, standard input "
                               "piped through zcat")


@pytest.mark.asyncio
async def test_utf16_cut_mid_character_rejects_only_the_last_row(write_csv):
    data = codecs.BOM_UTF16_LE + (HEADER + "T1,C1,3.00,2024-01-01,a\nT2,C2,4.00,2024-01-02,b").encode(
        "utf-16-le")
    path = write_csv("cut.csv", data[:-1])  # half of the last "b"

    result = await read(path)

    assert result["total_amount_exact"] == "3.00"
    assert result["row_errors"] == [{"line": 3, "reason": "category: not valid UTF-16"}]


@pytest.mark.asyncio
async def test_an_undecodable_extra_column_name_does_not_make_the_header_unusable(write_csv):
    # A Latin-1 bank export: only the extra column's name has a byte that is not UTF-8.
    path = write_csv("bank.csv", "transaction_id,customer_id,amount,date,category,Histórico\n"
                     "T1,C1,4.00,2024-02-01,fees,Tarifa\n".encode("latin-1"))

    for result in (await read(path), await process_file(path, delay=0)):
        assert result["status"] == "completed"
        assert result["total_amount_exact"] == "4.00"


@pytest.mark.asyncio
async def test_a_header_lacking_columns_with_bad_bytes_suggests_another_encoding(write_csv):
    path = write_csv("bank.csv", "Transação,Cliente,Valor,Data,Categoria\n".encode("latin-1"))

    result = await read(path)

    assert result["status"] == "error"
    assert result["error"] == (
        "Header lacks required column(s): transaction_id, customer_id, amount, date, category; "
        "the header does not read as UTF-8 text, so the file may be in another encoding: try "
        "--encoding; tried ',', ';', tab, '|' between columns")


@pytest.mark.asyncio
async def test_utf16_without_a_mark_read_as_utf8_suggests_another_encoding(write_csv):
    path = write_csv("unmarked.csv", UNICODE_TEXT.encode("utf-16-le"))

    result = await read(path)

    assert result["status"] == "error"
    assert "the header does not read as UTF-8 text" in result["error"]


# --- Delimiters and decimal commas ---

# What Excel writes in much of Europe: semicolons, and amounts with a decimal comma.
SEMICOLON_EXPORT = ("transaction_id;customer_id;amount;date;category\n"
                    "T1;C1;1234,50;2024-01-02;rent\n"
                    "T2;C2;-0,5;2024-01-03;fees\n"
                    "T3;C3;12.50;2024-01-04;rent\n"
                    "T4;C4;,25;2024-01-05;fees\n")


@pytest.mark.asyncio
async def test_semicolons_are_found_in_the_header_and_decimal_commas_read_exactly(write_csv):
    result = await read(write_csv("europe.csv", SEMICOLON_EXPORT), decimal_comma=True)

    assert result["delimiter"] == ";"
    assert result["total_transactions"] == 3
    assert result["total_amount_exact"] == "1234.25"  # 1234.50 - 0.50 + 0.25
    # With a decimal comma a point would separate thousands: 12.50 is refused, not guessed.
    assert result["row_errors"] == [{"line": 4, "reason": "amount '12.50' is not a plain decimal "
                                                          "number with a decimal comma"}]


@pytest.mark.asyncio
async def test_without_the_option_a_decimal_comma_is_rejected_with_a_hint(write_csv):
    result = await read(write_csv("europe.csv", SEMICOLON_EXPORT))

    assert result["total_amount_exact"] == "12.50"
    assert result["row_errors"][0] == {
        "line": 2, "reason": "amount '1234,50' is not a plain decimal number "
                             "(written with a decimal comma? try --decimal-comma)"}
    assert len(result["row_errors"]) == 3


@pytest.mark.asyncio
async def test_a_thousands_separator_gets_no_decimal_comma_hint(write_csv):
    path = write_csv("us.csv", HEADER + 'T1,C1,"1,234.50",2024-01-02,rent\n')

    result = await read(path)

    assert result["row_errors"] == [{"line": 2, "reason": "amount '1,234.50' is not a plain "
                                                          "decimal number"}]


@pytest.mark.asyncio
async def test_a_decimal_comma_in_a_quoted_field_of_a_comma_separated_file(write_csv):
    path = write_csv("quoted.csv", HEADER + 'T1,C1,"3,75",2024-01-02,rent\n')

    result = await read(path, decimal_comma=True)

    assert result["delimiter"] == ","
    assert result["total_amount_exact"] == "3.75"


@pytest.mark.parametrize("delimiter, name", [("\t", "tsv"), ("|", "pipes")])
@pytest.mark.asyncio
async def test_a_tab_or_pipe_separated_file_is_read_with_that_delimiter(write_csv, delimiter, name):
    text = (HEADER + "T1,C1,2.00,2024-06-01,a\nT2,C2,3.00,2024-06-02,a\n").replace(",", delimiter)

    result = await read(write_csv(f"{name}.txt", text))

    assert result["delimiter"] == delimiter
    assert result["total_amount_exact"] == "5.00"
    assert result["invalid_rows"] == 0


@pytest.mark.asyncio
async def test_a_delimiter_that_is_given_is_not_guessed(write_csv):
    path = write_csv("europe.csv", SEMICOLON_EXPORT)

    result = await read(path, delimiter=",")

    assert result["status"] == "error"
    assert result["error"] == ("Header lacks required column(s): transaction_id, customer_id, "
                               "amount, date, category")


@pytest.mark.asyncio
async def test_an_ambiguous_header_is_never_guessed(write_csv):
    # All five names are there between semicolons, and again between pipes.
    header = "transaction_id;customer_id;amount;date;category;x|transaction_id|customer_id|amount|date|category\n"
    result = await read(write_csv("both.csv", header))

    assert result["status"] == "error"
    assert result["error"] == ("Header has the required columns with ';' and '|' between them: "
                               "say which with --delimiter")


@pytest.mark.asyncio
async def test_a_header_that_fits_no_delimiter_says_what_was_tried(write_csv):
    result = await read(write_csv("other.csv", "date;payee;amount\n2024-01-01;shop;3\n"))

    assert result["error"] == ("Header lacks required column(s): transaction_id, customer_id, "
                               "amount, date, category; tried ',', ';', tab, '|' between columns")


@pytest.mark.asyncio
async def test_blank_lines_before_a_guessed_header_keep_line_numbers_physical(write_csv):
    text = "\n;;;;\n" + SEMICOLON_EXPORT.replace("12.50", "oops")

    result = await read(write_csv("blanks.csv", text), decimal_comma=True)

    assert result["delimiter"] == ";"
    assert result["row_errors"] == [{"line": 6, "reason": "amount 'oops' is not a plain decimal "
                                                          "number with a decimal comma"}]


@pytest.mark.asyncio
async def test_the_faster_reader_handles_other_delimiters_and_decimal_commas(
        write_csv, fast_path_answers):
    rows = "".join(f"T{n};C{n};1,10;2024-02-{n % 28 + 1:02d};food\n" for n in range(250))
    path = write_csv("many.csv", "transaction_id;customer_id;amount;date;category\n" + rows)

    result = await read(path, decimal_comma=True)

    assert result["total_transactions"] == 250
    assert result["total_amount_exact"] == "275.00"  # 250 x 1.10
    assert result["date_range"] == {"earliest": "2024-02-01", "latest": "2024-02-28"}
    assert fast_path_answers == [True, True, True]  # 100, 100 and 50 rows


# --- Compressed files ---

@pytest.mark.asyncio
async def test_a_gzipped_file_is_read_through_gzip(write_csv):
    path = write_csv("day.csv.gz", gzip.compress(
        (HEADER + "T1,C1,1.50,2024-01-01,a\nT2,C2,2.25,2024-01-02,b\nT3,C3,?,2024-01-03,b\n").encode()))

    result = await read(path)

    assert result["status"] == "completed"
    assert result["total_amount_exact"] == "3.75"
    assert result["row_errors"] == [{"line": 4, "reason": "amount '?' is not a plain decimal number"}]


@pytest.mark.asyncio
async def test_progress_of_a_gzipped_file_is_counted_in_compressed_bytes(write_csv):
    rows = "".join(f"T{n},C{n},1.00,2024-01-01,a\n" for n in range(1000))
    path = write_csv("big.csv.gz", gzip.compress((HEADER + rows).encode()))
    progress = processor.FileProgress()

    await process_file(path, delay=0, progress=progress, open_input=ClientFiles().open_input)

    assert 0 < progress.bytes_read <= os.path.getsize(path)


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "not-gzip"])
@pytest.mark.asyncio
async def test_a_damaged_gzip_file_is_an_error_and_none_of_its_rows_count(write_csv, damage):
    rows = "".join(f"T{n},C{n},1.00,2024-01-01,a\n" for n in range(5000))
    whole = gzip.compress((HEADER + rows).encode())
    data = {"truncated": whole[:len(whole) // 2],
            "corrupt": whole[:40] + bytes(200) + whole[240:],
            "not-gzip": (HEADER + rows).encode()}[damage]
    path = write_csv("damaged.csv.gz", data)

    result = await read(path)

    assert result["status"] == "error"
    assert result["error"].startswith("Cannot be read as gzip: ")
    assert result["retryable"] is False


# --- Standard input ---

def test_standard_input_is_read_as_a_file_named_dash():
    data = (HEADER + "T1,C1,4.00,2024-01-01,a\nT2,C2,bad,2024-01-02,a\n").encode("utf-16")

    done = run("--json", "-", stdin=data)

    assert done.returncode == 0, done.stderr
    result = json_results(done)["-"]
    assert result["status"] == "completed"
    assert result["total_amount_exact"] == "4.00"
    assert result["row_errors"] == [{"line": 3, "reason": "amount 'bad' is not a plain decimal number"}]


def test_standard_input_through_a_pipe_beside_a_file(write_csv):
    # 1, not 1.00: --decimal-comma applies to every file, and would reject the point.
    path = write_csv("one.csv", HEADER + "T1,C1,1,2024-01-01,a\n")
    producer = subprocess.Popen([sys.executable, "-c", "import sys\n"
                                 "sys.stdout.write('transaction_id;customer_id;amount;date;category\\n')\n"
                                 "for n in range(3000): sys.stdout.write(f'T{n};C;0,01;2024-01-01;a\\n')"],
                                stdout=subprocess.PIPE)
    done = subprocess.run([sys.executable, PROCESSOR, "--delay", "0", "--json", "--decimal-comma",
                           path, "-"], stdin=producer.stdout, capture_output=True, timeout=60)
    producer.wait()
    producer.stdout.close()

    results = json_results(done)
    assert results["-"]["total_amount_exact"] == "30.00"  # 3000 x 0.01
    assert results["-"]["delimiter"] == ";"
    assert results[path]["total_amount_exact"] == "1"  # --decimal-comma applies to every file


def test_standard_input_that_cannot_be_read_is_not_retried(tmp_path):
    missing = str(tmp_path / "missing.csv")  # beside it, a failure that is retried
    done = subprocess.run([sys.executable, PROCESSOR, "--json", "--retries", "2",
                           "--retry-delay", "0", "-", missing], capture_output=True, timeout=60,
                          preexec_fn=lambda: os.close(0))  # run with standard input closed

    results = json_results(done)
    assert done.returncode == 1
    assert results["-"]["error"] == "Standard input is closed"
    assert results["-"]["attempts"] == 1
    assert results[missing]["attempts"] == 3


def test_a_byte_order_mark_split_between_two_writes_of_a_pipe_is_still_seen():
    data = codecs.BOM_UTF32_LE + (HEADER + "T1,C1,4.00,2024-01-01,a\n").encode("utf-32-le")
    producer = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                                 "data = sys.stdin.buffer.read()\n"
                                 "sys.stdout.buffer.write(data[:2]); sys.stdout.flush()\n"
                                 "time.sleep(0.3)\n"
                                 "sys.stdout.buffer.write(data[2:])"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    producer.stdin.write(data)
    producer.stdin.close()
    done = subprocess.run([sys.executable, PROCESSOR, "--delay", "0", "--json", "-"],
                          stdin=producer.stdout, capture_output=True, timeout=60)
    producer.wait()
    producer.stdout.close()

    assert json_results(done)["-"]["total_amount_exact"] == "4.00"


def test_the_dashboard_cannot_share_standard_input_with_the_data():
    done = run("--dashboard", "-", stdin=HEADER.encode())

    assert done.returncode == 2
    assert b"--dashboard reads its keys from standard input" in done.stderr


@pytest.mark.parametrize("before_header, first_rows, total", [
    ("", 150, "30.00"),  # 300 x 0.10: the second chunk must wait
    ("\n" * 150, 60, "21.00"),  # 210 x 0.10: the first chunk must wait, the header need not
], ids=["header-first", "blank-lines-first"])
@pytest.mark.asyncio
async def test_a_pipe_slow_to_fill_holds_up_no_other_file(write_csv, monkeypatch, before_header,
                                                          first_rows, total):
    other = write_csv("other.csv", HEADER + "T1,C1,1.00,2024-01-01,a\n" * 500)
    read_end, write_end = os.pipe()
    stdin = os.fdopen(read_end, "r")
    monkeypatch.setattr(sys, "stdin", stdin)
    results: dict = {}
    row = b"T1,C1,0.10,2024-01-01,a\n"
    real_readinto = processor.StdinPump.readinto

    def never_waiting(pump, buffer):
        with pump.changed:
            assert pump.buffer or pump.ended, "the event loop would wait in a read"
        return real_readinto(pump, buffer)

    monkeypatch.setattr(processor.StdinPump, "readinto", never_waiting)

    async def client() -> None:
        """Write the header and the first rows, and 150 more only once the other file has its
        result: were the pipe read in the event loop's thread, that file would never get one."""
        os.write(write_end, before_header.encode() + HEADER.encode() + row * first_rows)
        while other not in results:
            await asyncio.sleep(0.01)
        os.write(write_end, row * 150)
        os.close(write_end)

    reader = ClientFiles().open_input
    writing = asyncio.create_task(client())
    batch = await asyncio.wait_for(processor.process_batch(
        ["-", other], delay=0, results=results, view=lambda batch: asyncio.sleep(0),
        read_file=lambda name, **options: process_file(name, open_input=reader, **options)), 10)
    await writing
    stdin.close()

    assert batch["results"]["-"]["total_amount_exact"] == total
    assert batch["results"][other]["total_amount_exact"] == "500.00"


def test_standard_input_given_twice_is_a_usage_error():
    done = run("-", "-", stdin=HEADER.encode())

    assert done.returncode == 2
    assert b"- (standard input) can be read only once" in done.stderr


def test_rejects_keep_a_header_with_bad_bytes_readable_and_name_a_gz_file_by_its_stem(tmp_path):
    data = gzip.compress(b"transaction_id,customer_id,amount,date,category,not\xe9s\n"
                         b"T1,C1,x,2024-01-02,food,a\nT2,C2,3,2024-01-02,food,a\n")
    (tmp_path / "day.csv.gz").write_bytes(data)

    done = run("--json", "--rejects", str(tmp_path / "rejects"), str(tmp_path / "day.csv.gz"))

    assert json_results(done)[str(tmp_path / "day.csv.gz")]["total_amount_exact"] == "3"
    assert (tmp_path / "rejects" / "day.rejects.csv").read_text().splitlines()[0] == (
        "line,reason,transaction_id,customer_id,amount,date,category,not\\xe9s")


def test_rejected_rows_of_standard_input_are_kept_as_stdin(tmp_path):
    done = run("--rejects", str(tmp_path), "-", stdin=(HEADER + "T1,C1,x,2024-01-01,a\n").encode())

    assert done.returncode == 0, done.stderr
    assert (tmp_path / "stdin.rejects.csv").read_text().splitlines()[1].startswith("2,")


# --- Which files ---

def test_a_missing_file_under_two_spellings_is_one_error(tmp_path):
    done = subprocess.run([sys.executable, PROCESSOR, "--json", "missing.csv", "./missing.csv"],
                          cwd=tmp_path, capture_output=True, timeout=60)

    assert list(json.loads(done.stdout)["results"]) == ["missing.csv"]


def test_one_file_under_three_spellings_is_processed_once(tmp_path):
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "x.csv").write_text(HEADER + "T1,C1,5.00,2024-01-01,a\n")
    spellings = ["a/x.csv", "./a/x.csv", str(folder / "x.csv")]

    done = subprocess.run([sys.executable, PROCESSOR, "--delay", "0", "--json", *spellings],
                          cwd=tmp_path, capture_output=True, timeout=60)

    batch = json.loads(done.stdout)
    assert list(batch["results"]) == ["a/x.csv"]  # the first spelling given
    assert batch["summary"]["total_amount_exact"] == "5.00"


def test_a_hard_link_is_the_same_file(tmp_path):
    (tmp_path / "x.csv").write_text(HEADER + "T1,C1,5.00,2024-01-01,a\n")
    os.link(tmp_path / "x.csv", tmp_path / "y.csv")

    batch = json.loads(run("--json", str(tmp_path)).stdout)

    assert list(batch["results"]) == [str(tmp_path / "x.csv")]


def test_a_folder_gives_its_csv_and_csv_gz_files_in_any_case(tmp_path):
    (tmp_path / "DATA.CSV").write_text(HEADER + "T1,C1,1.00,2024-01-01,a\n")
    (tmp_path / "more.csv.gz").write_bytes(gzip.compress((HEADER + "T1,C1,2.00,2024-01-01,a\n").encode()))
    (tmp_path / ".hidden.csv").write_text(HEADER)
    (tmp_path / "notes.txt").write_text("not a csv")
    (tmp_path / "folder.csv").mkdir()

    done = run("--json", str(tmp_path))

    batch = json.loads(done.stdout)
    assert [os.path.basename(name) for name in batch["results"]] == ["DATA.CSV", "more.csv.gz"]
    assert batch["summary"]["total_amount_exact"] == "3.00"


def test_a_directory_that_cannot_be_listed_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(processor.os, "scandir", refuse)

    with pytest.raises(SystemExit) as stopped:
        processor.main([str(tmp_path)])

    assert stopped.value.code == 2
    assert capsys.readouterr().err == (f"processor.py: error: cannot list the directory {tmp_path}: "
                                       "Permission denied\n")


# --- Options ---

@pytest.mark.parametrize("option, value, message", [
    ("--encoding", "klingon", b"not a text encoding Python can read files in: 'klingon'"),
    ("--encoding", "base64", b"not a text encoding Python can read files in: 'base64'"),
    ("--encoding", "punycode", b"not a text encoding Python can read files in: 'punycode'"),
    ("--delimiter", ";;", b"must be one character other than a quote or a line end"),
    ("--delimiter", '"', b"must be one character other than a quote or a line end"),
])
def test_a_bad_reading_option_is_a_usage_error(write_csv, option, value, message):
    done = run(option, value, write_csv("x.csv", HEADER))

    assert done.returncode == 2
    assert message in done.stderr


def test_tab_can_be_named_and_the_report_says_which_delimiter_was_used(write_csv):
    path = write_csv("x.tsv", "transaction_id\tcustomer_id\tamount\tdate\tcategory\nT1\tC1\t1.00\t2024-01-01\ta\n")

    done = run("--delimiter", "tab", path)

    assert done.returncode == 0, done.stderr
    assert f"Columns separated by other than commas:\n  {path}: tab\n".encode() in done.stdout
