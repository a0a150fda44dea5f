"""--serve: the watcher over HTTP, from its own event loop. Real requests over loopback, a raw
socket for the malformed ones, and the program itself for its signals and its port."""
import asyncio
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, closing, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

import processor
from processor import HttpError, WatchSession

PROCESSOR = str(Path(__file__).resolve().parent.parent / "processor.py")
HEADER = "transaction_id,customer_id,amount,date,category\n"
# 3 valid rows: 12.50 + 7.25 + 0.25 = 20.00, dining twice; T3 is rejected
GOOD = (HEADER + "T1,C1,12.50,2024-01-05,dining\n"
                 "T2,C2,7.25,2024-02-01,fuel\n"
                 "T3,C3,oops,2024-02-02,fuel\n"
                 "T4,C1,0.25,2024-01-20,dining\n")
# 2 valid rows: 100.10 + 0.01 = 100.11
OTHER = HEADER + "T1,C1,100.10,2024-03-01,rent\nT2,C2,0.01,2024-03-02,rent\n"
NO_AMOUNT = "transaction_id,customer_id,date,category\nT1,C1,2024-01-05,dining\n"
TOKEN = "s3cret-token"


# --- Pure parts ---

@pytest.mark.parametrize("text, address", [
    ("8080", ("127.0.0.1", 8080)),
    ("0", ("127.0.0.1", 0)),
    ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("localhost:65535", ("localhost", 65535)),
    ("[::1]:8080", ("::1", 8080)),
])
def test_an_address_is_host_and_port_the_host_loopback_unless_given(text, address):
    assert processor.parse_address(text) == address


@pytest.mark.parametrize("text", ["", "http", "80a", "65536", "host:", ":80", "-1", "８０",
                                  "::1:80", "[::1:80", "[a]b:80", "[127.0.0.1]:80"])
def test_an_address_that_is_not_host_and_port_is_refused(text):
    with pytest.raises(ValueError):
        processor.parse_address(text)


@pytest.mark.parametrize("text, size", [
    ("5000", 5000), ("100MB", 100_000_000), ("100m", 100_000_000), ("2K", 2000),
    ("1GiB", 2 ** 30), ("3kib", 3072), ("7b", 7),
])
def test_a_size_takes_decimal_and_binary_units(text, size):
    assert processor.byte_count(text) == size


@pytest.mark.parametrize("text", ["", "0", "MB", "1.5MB", "10 MB", "10TB", "-5", "1e6"])
def test_a_size_that_is_not_one_is_refused(text):
    with pytest.raises(Exception, match="not a size"):
        processor.byte_count(text)


def test_a_head_is_parsed_into_method_path_query_and_lower_case_headers():
    request = processor.parse_head(b"GET /files?status=done&limit=2 HTTP/1.1\r\n"
                                   b"Host: x\r\nX-Thing:  a b \r\n\r\n")

    assert request == processor.Request("GET", "/files", {"status": "done", "limit": "2"},
                                        {"host": "x", "x-thing": "a b"})


@pytest.mark.parametrize("head", [
    b"GET /\r\n\r\n",  # no version
    b"GET / HTTP/2\r\n\r\n",
    b"GET http://elsewhere/ HTTP/1.1\r\n\r\n",
    b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n",  # a target must be ASCII (%-escaped)
    b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
    b"GET / HTTP/1.1\r\n folded: header\r\n\r\n",
    b"GET / HTTP/1.junk\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nNUL\x00: x\r\n\r\n",
    b"PUT /incoming/a.csv HTTP/1.1\r\nContent-Length: 78\r\nContent-Length: 3\r\n\r\n",
])
def test_a_head_that_is_not_http_1_gets_400(head):
    with pytest.raises(HttpError) as refused:
        processor.parse_head(head)
    assert refused.value.status == 400


@pytest.mark.parametrize("name, allowed", [
    ("x.csv", True), ("Export 2024 (1).CSV", True), ("x.csv.gz", True), ("café.csv", True),
    ("../x.csv", False), ("..", False), (".", False), (".x.csv", False), ("a/b.csv", False),
    ("a\\b.csv", False), ("x.txt", False), ("x.csv.part", False), ("x\n.csv", False),
    ("x" * 196 + ".csv", True), ("x" * 197 + ".csv", False), ("", False),
    ("a\u202evsc.exe.csv", False), ("a\u0085b.csv", False), ("a\u2028b.csv", False),
])
def test_an_upload_name_is_a_plain_name_the_watcher_takes(name, allowed):
    assert (processor.upload_name_problem(name) is None) == allowed


def test_lines_come_from_the_end_whatever_the_block_size(tmp_path, monkeypatch):
    path = tmp_path / "results.jsonl"
    lines = [f"line {number} " + "x" * (number % 13) for number in range(40)]
    path.write_text("\n".join(lines) + "\n")
    for block in (1, 7, 64, 65536):
        monkeypatch.setattr(processor, "HISTORY_BLOCK", block)
        assert [line.decode() for line in processor.lines_from_end(str(path))] == lines[::-1]


def test_an_empty_results_file_has_no_lines(tmp_path):
    (tmp_path / "results.jsonl").write_text("")
    assert list(processor.lines_from_end(str(tmp_path / "results.jsonl"))) == []


def result_line(filename: str, status: str = "completed") -> str:
    """Return a line of results.jsonl with the keys the server reads."""
    return json.dumps({"filename": filename, "status": status, "total_transactions": 1,
                       "invalid_rows": 0, "total_amount_exact": "1.00", "top_category": "x",
                       "error": None if status == "completed" else "bad"}) + "\n"


def test_history_is_newest_first_filtered_and_paged(tmp_path, monkeypatch):
    monkeypatch.setattr(processor, "HISTORY_BLOCK", 50)
    path = tmp_path / "results.jsonl"
    statuses = ["completed", "error", "completed", "completed", "error"]
    path.write_text("".join(result_line(f"/w/done/f{number}.csv", status)
                            for number, status in enumerate(statuses))
                    + "not json, a line edited by hand\n")

    def names(**choice):
        return [os.path.basename(result["filename"])
                for result in processor.history(str(path), **choice)]

    assert names(limit=10) == ["f4.csv", "f3.csv", "f2.csv", "f1.csv", "f0.csv"]
    assert names(limit=2, offset=1) == ["f3.csv", "f2.csv"]
    assert names(status="completed", limit=10, offset=1) == ["f2.csv", "f0.csv"]
    assert names(status="error", limit=1) == ["f4.csv"]
    assert names(name="f1.csv", limit=1) == ["f1.csv"]
    assert names(name="f9.csv", limit=1) == []


def test_history_stops_reading_once_it_has_enough(tmp_path, monkeypatch):
    path = tmp_path / "results.jsonl"
    path.write_text("".join(result_line(f"f{n}.csv") for n in range(10_000)))
    reads: list[int] = []
    real_open = open

    class CountingFile:
        def __init__(self, file):
            self.file = file

        def __enter__(self):
            return self

        def __exit__(self, *exception):
            self.file.close()

        def seek(self, *where):
            return self.file.seek(*where)

        def read(self, size):
            reads.append(size)
            return self.file.read(size)

    monkeypatch.setattr("builtins.open", lambda *a, **k: CountingFile(real_open(*a, **k)))
    found = processor.history(str(path), limit=3)

    assert [result["filename"] for result in found] == ["f9999.csv", "f9998.csv", "f9997.csv"]
    assert sum(reads) <= processor.HISTORY_BLOCK < path.stat().st_size


def test_the_page_escapes_every_name_it_shows():
    evil = '<img src=x onerror="alert(1)">.csv'
    stats = {"watching": "/in<b>box", "uptime": 5.0,
             "folders": {"incoming": 1, "processing": 1, "done": 0, "failed": 1},
             "in_progress": [{"name": evil, "status": "reading", "rows": 100, "rejected": 0,
                              "bytes_read": 50, "size": 100, "seconds": 1.0}],
             "totals": {"files": 1, "valid_rows": 0, "rejected_rows": 0, "amount": "0"}}
    result = {"filename": "/w/failed/" + evil, "status": "error", "total_transactions": 0,
              "invalid_rows": 0, "total_amount_exact": "0", "top_category": "<i>x</i>",
              "error": "<b>bad</b>"}
    error = {"at": "2026-11-30T10:00:00.000+00:00", "kind": "failed", "name": evil,
             "error": "<b>bad</b>"}

    page = processor.render_page(stats, [result], [error])

    assert "<img" not in page and "<b>" not in page and "<i>" not in page
    assert page.count("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;.csv") == 3
    assert "/in&lt;b&gt;box" in page


def test_an_event_is_numbered_named_and_its_data_one_line_of_json():
    message = processor.event_message("claimed", {"name": "a\nb.csv"}, 7)
    assert message == b'id: 7\nevent: claimed\ndata: {"name": "a\\nb.csv"}\n\n'


# --- The server, in this process ---

@dataclass
class Served:
    server: processor.WatchServer
    session: WatchSession
    port: int
    root: Path

    def drop(self, name: str, text: str) -> None:
        """Put a file in incoming/ whole: written under a hidden name, then renamed."""
        hidden = self.root / "incoming" / f".{name}"
        hidden.write_text(text)
        hidden.rename(self.root / "incoming" / name)


@asynccontextmanager
async def serving(root: Path, *, token: str | None = None, max_upload: int = 10_000,
                  max_concurrent: int = 3, retries: int = 0, retry_delay: float = 0.0,
                  delay: float = 0.0, settle: float = 0.0, read_file=None):
    """Run the watcher on root with its server on a free loopback port; yield what it serves."""
    folders, lock = processor.open_watch_folder(str(root))
    session = WatchSession(folders)
    settings = processor.Settings(max_concurrent=max_concurrent, delay=delay, retries=retries,
                                  retry_delay=retry_delay)
    listening = processor.listen_on("127.0.0.1", 0)
    server = processor.WatchServer(listening, session, {"max_concurrent": max_concurrent},
                                   token=token, max_upload=max_upload)
    task = asyncio.create_task(processor.watch_folder(
        session, settings, poll=0.01, settle=settle, read_file=read_file,
        on_claim=server.claimed, on_result=server.finished, on_retry=server.retrying,
        alongside=[server.run]))
    # What asyncio would log ("Unhandled exception in client_connected_cb", "Task exception was
    # never retrieved"): every test of the server checks there is none.
    logged: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: logged.append(context))
    try:
        yield Served(server, session, listening.getsockname()[1], root)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        listening.close()
        os.close(lock)
    assert logged == []


def fetch(port: int, method: str, path: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """Make one request with http.client; return the status, the headers (names in lower case)
    and the body."""
    with closing(http.client.HTTPConnection("127.0.0.1", port, timeout=10)) as connection:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return (response.status, {name.lower(): value for name, value in response.getheaders()},
                response.read())


async def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(fetch, port, "GET", path)


async def get_json(port: int, path: str, status: int = 200):
    answered, headers, body = await get(port, path)
    assert (answered, headers["content-type"]) == (status, "application/json")
    return json.loads(body)


async def put(port: int, name: str, body: bytes, token: str | None = TOKEN, **headers):
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return await asyncio.to_thread(fetch, port, "PUT", f"/incoming/{name}", body, headers)


async def wait_until(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "never got there"
        await asyncio.sleep(0.01)


def raw_exchange(port: int, data: bytes, *, then_wait: float = 10.0) -> bytes:
    """Send bytes on a raw socket and return all the server sends back before it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=then_wait) as raw:
        raw.sendall(data)
        received = b""
        while chunk := raw.recv(65536):
            received += chunk
        return received


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.mark.asyncio
async def test_healthz_says_ok_and_every_response_is_typed_and_never_cached(tmp_path):
    async with serving(tmp_path / "inbox") as served:
        for path in ("/healthz", "/", "/stats", "/files", "/errors", "/nowhere"):
            _, headers, body = await get(served.port, path)
            assert headers["cache-control"] == "no-store"
            assert headers["content-type"] in ("text/plain; charset=utf-8", "application/json",
                                               "text/html; charset=utf-8")
            assert int(headers["content-length"]) == len(body)
        assert await get(served.port, "/healthz") == (200, {
            "content-type": "text/plain; charset=utf-8", "content-length": "3",
            "cache-control": "no-store", "connection": "close"}, b"ok\n")


@pytest.mark.asyncio
async def test_stats_files_and_errors_hold_the_figures_of_the_files_processed(tmp_path):
    async with serving(tmp_path / "inbox") as served:
        served.drop("good.csv", GOOD)
        await wait_until(lambda: served.session.done == 1)
        served.drop("broken.csv", NO_AMOUNT)
        await wait_until(lambda: served.session.failed == 1)
        served.drop("other.csv", OTHER)
        await wait_until(lambda: served.session.done == 2)
        port = served.port

        stats = await get_json(port, "/stats")
        assert stats["watching"] == str(tmp_path / "inbox")
        assert stats["folders"] == {"incoming": 0, "processing": 0, "done": 2, "failed": 1}
        assert stats["in_progress"] == []
        # 20.00 + 100.11; 3 + 2 valid rows, T3 of good.csv rejected
        assert stats["totals"] == {"files": 3, "valid_rows": 5, "rejected_rows": 1,
                                   "amount": "120.11"}
        assert stats["settings"] == {"max_concurrent": 3, "uploads": False,
                                     "max_upload": 10_000}
        assert stats["uptime"] > 0

        history = await get_json(port, "/files")
        assert [(os.path.basename(result["filename"]), result["status"],
                 result["total_amount_exact"]) for result in history["files"]] == [
            ("other.csv", "completed", "100.11"), ("broken.csv", "error", "0"),
            ("good.csv", "completed", "20.00")]
        assert history["next"] is None

        first = await get_json(port, "/files?status=done&limit=1")
        assert [result["filename"] for result in first["files"]] == [
            str(tmp_path / "inbox" / "done" / "other.csv")]
        assert first["next"] == "/files?status=done&limit=1&offset=1"
        second = await get_json(port, first["next"])
        assert [result["filename"] for result in second["files"]] == [
            str(tmp_path / "inbox" / "done" / "good.csv")]
        assert second["next"] is None
        failed = await get_json(port, "/files?status=failed")
        assert [result["filename"] for result in failed["files"]] == [
            str(tmp_path / "inbox" / "failed" / "broken.csv")]

        good = await get_json(port, "/files/good.csv")
        assert (good["total_transactions"], good["invalid_rows"], good["top_category"],
                good["row_errors"][0]["line"]) == (3, 1, "dining", 4)
        assert "sha256" in good and "finished_at" in good
        await get_json(port, "/files/never.csv", 404)

        errors = (await get_json(port, "/errors"))["errors"]
        assert [(error["kind"], error["name"]) for error in errors] == [("failed", "broken.csv")]
        assert "amount" in errors[0]["error"]


@pytest.mark.parametrize("query", ["status=pending", "limit=-1", "limit=101", "offset=x",
                                   "limit=1e3", "limit=0"])
@pytest.mark.asyncio
async def test_a_bad_query_of_files_gets_400(tmp_path, query):
    async with serving(tmp_path / "inbox") as served:
        assert "error" in await get_json(served.port, f"/files?{query}", 400)


@pytest.mark.asyncio
async def test_the_page_shows_the_counts_the_results_and_the_errors(tmp_path):
    async with serving(tmp_path / "inbox") as served:
        served.drop("good.csv", GOOD)
        served.drop("broken.csv", NO_AMOUNT)
        await wait_until(lambda: served.session.done + served.session.failed == 2)

        status, headers, body = await get(served.port, "/")
        page = body.decode()

        assert (status, headers["content-type"]) == (200, "text/html; charset=utf-8")
        assert ("2 files processed\n(1 done, 1 failed):\n3 transactions, total 20.00,\n"
                "1 row rejected") in page
        assert ("<tr><td class=\"n\">0</td><td class=\"n\">0</td><td class=\"n\">1</td>"
                "<td class=\"n\">1</td></tr>") in page
        assert ('<tr><td>good.csv</td><td>completed</td><td class="n">3</td><td class="n">1</td>'
                '<td class="n">20.00</td><td>dining</td></tr>') in page
        assert ('<tr><td>broken.csv</td><td>error</td><td class="n">-</td><td class="n">-</td>'
                '<td class="n">-</td><td>-</td></tr>') in page
        assert "failed: Header lacks required column(s): amount" in page
        assert "new EventSource(\"/events\")" in page
        assert "src=" not in page and "href=" not in page  # nothing to load from elsewhere


@pytest.mark.asyncio
async def test_a_file_in_progress_is_shown_with_how_far_it_has_got(tmp_path):
    rows = "".join(f"T{n},C1,1.00,2024-01-01,misc\n" for n in range(1000))
    async with serving(tmp_path / "inbox", delay=0.05) as served:
        served.drop("long.csv", HEADER + rows)
        await wait_until(lambda: served.server.in_progress()
                         and served.server.in_progress()[0]["rows"] >= 100)

        stats = await get_json(served.port, "/stats")
        one = await get_json(served.port, "/files/long.csv")

    [file] = stats["in_progress"]
    assert (file["name"], file["status"], file["size"]) == (
        "long.csv", "reading", len(HEADER) + len(rows))
    assert 100 <= file["rows"] < 1000 and file["rejected"] == 0
    assert stats["folders"]["processing"] == 1
    assert one["name"] == "long.csv" and one["status"] == "reading"


# --- Uploads ---

@pytest.mark.asyncio
async def test_an_upload_is_processed_and_the_same_name_again_gets_409(tmp_path):
    async with serving(tmp_path / "inbox", token=TOKEN) as served:
        status, headers, body = await put(served.port, "client.csv", GOOD.encode())
        assert status == 201
        assert headers["location"] == "/files/client.csv"
        assert json.loads(body) == {"name": "client.csv", "bytes": len(GOOD),
                                    "result": "/files/client.csv"}
        await wait_until(lambda: served.session.done == 1)
        result = await get_json(served.port, headers["location"])
        assert (result["status"], result["total_amount_exact"]) == ("completed", "20.00")
        assert (tmp_path / "inbox" / "done" / "client.csv").read_text() == GOOD

        again, _, body = await put(served.port, "client.csv", OTHER.encode())
        assert again == 409 and "done/" in json.loads(body)["error"]
        assert sorted(os.listdir(tmp_path / "inbox" / "incoming")) == []


@pytest.mark.asyncio
async def test_a_name_waiting_in_incoming_gets_409(tmp_path):
    async with serving(tmp_path / "inbox", token=TOKEN, settle=3600) as served:
        served.drop("waiting.csv", GOOD)
        status, _, body = await put(served.port, "waiting.csv", OTHER.encode())
        assert status == 409 and "incoming/" in json.loads(body)["error"]
        assert (tmp_path / "inbox" / "incoming" / "waiting.csv").read_text() == GOOD
        # Its result-to-be says where it is.
        assert (await get_json(served.port, "/files/waiting.csv"))["status"] == "waiting"


@pytest.mark.parametrize("path", ["/incoming/../escape.csv", "/incoming/..%2Fescape.csv",
                                  "/incoming/%2E%2E/escape.csv", "/incoming/.hidden.csv",
                                  "/incoming/sub/escape.csv", "/incoming/notes.txt",
                                  "/incoming/", "/incoming/%ff.csv"])
@pytest.mark.asyncio
async def test_a_name_that_is_not_a_plain_csv_name_is_refused(tmp_path, path):
    async with serving(tmp_path / "inbox", token=TOKEN) as served:
        status, _, body = await asyncio.to_thread(
            fetch, served.port, "PUT", path, GOOD.encode(), {"Authorization": f"Bearer {TOKEN}"})

        assert status == 400, body
        assert sorted(os.listdir(tmp_path / "inbox" / "incoming")) == []
        assert not (tmp_path / "inbox" / "escape.csv").exists()
        assert sorted(os.listdir(tmp_path / "inbox")) == [
            ".processor.lock", "done", "failed", "incoming", "processing", "results.jsonl"]


@pytest.mark.asyncio
async def test_an_upload_over_the_limit_gets_413_and_leaves_nothing(tmp_path):
    async with serving(tmp_path / "inbox", token=TOKEN, max_upload=len(GOOD) - 1) as served:
        status, _, body = await put(served.port, "big.csv", GOOD.encode())
        assert status == 413
        assert json.loads(body)["error"] == f"{len(GOOD)} bytes is over the limit of {len(GOOD) - 1}"
        just_fits, _, _ = await put(served.port, "fits.csv", GOOD.encode()[:-1])
        assert just_fits == 201
    assert sorted(os.listdir(tmp_path / "inbox" / "incoming")) + sorted(
        os.listdir(tmp_path / "inbox" / "done")) == ["fits.csv"]


@pytest.mark.asyncio
async def test_uploads_are_off_without_a_token_and_need_the_right_one_with_it(tmp_path):
    async with serving(tmp_path / "off") as served:
        status, _, body = await put(served.port, "a.csv", GOOD.encode())
        assert status == 403 and processor.SERVE_TOKEN_VARIABLE in json.loads(body)["error"]
    async with serving(tmp_path / "on", token=TOKEN) as served:
        for token in (None, "wrong", TOKEN + "x", TOKEN[:-1], ""):
            status, headers, _ = await put(served.port, "a.csv", GOOD.encode(), token=token)
            assert (status, headers["www-authenticate"]) == (401, "Bearer")
        status, _, _ = await put(served.port, "a.csv", GOOD.encode(), token=TOKEN)
        assert status == 201
    assert os.listdir(tmp_path / "off" / "incoming") == []


@pytest.mark.asyncio
async def test_an_upload_without_a_length_gets_411(tmp_path):
    async with serving(tmp_path / "inbox", token=TOKEN) as served:
        response = await asyncio.to_thread(
            raw_exchange, served.port,
            f"PUT /incoming/a.csv HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".encode())
        assert status_of(response) == 411


@pytest.mark.asyncio
async def test_expect_100_continue_is_answered_before_the_body_is_sent(tmp_path):
    async with serving(tmp_path / "inbox", token=TOKEN) as served:
        def upload() -> bytes:
            with socket.create_connection(("127.0.0.1", served.port), timeout=10) as raw:
                raw.sendall(f"PUT /incoming/a.csv HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                            f"Content-Length: {len(GOOD)}\r\nExpect: 100-continue\r\n\r\n"
                            .encode())
                interim = raw.recv(100)  # before any byte of the body
                raw.sendall(GOOD.encode())
                return interim + raw.makefile("rb").read()

        response = await asyncio.to_thread(upload)

    assert response.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n")


@pytest.mark.asyncio
async def test_an_upload_cut_short_leaves_no_file_and_no_temporary(tmp_path, monkeypatch):
    monkeypatch.setattr(processor, "SERVE_TIMEOUT_S", 0.3)
    async with serving(tmp_path / "inbox", token=TOKEN) as served:
        incoming = tmp_path / "inbox" / "incoming"
        head = (f"PUT /incoming/a.csv HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Length: {len(GOOD)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", served.port)) as raw:
            raw.sendall(head + GOOD.encode()[:20])  # then the client goes
            await wait_until(lambda: os.listdir(incoming))
            [temporary] = os.listdir(incoming)
            assert temporary.startswith(".a.csv.") and temporary.endswith(".upload")
        await wait_until(lambda: not os.listdir(incoming))

        with socket.create_connection(("127.0.0.1", served.port)) as raw:
            raw.sendall(head + GOOD.encode()[:20])  # then stays, silent
            await wait_until(lambda: os.listdir(incoming))
            await wait_until(lambda: not os.listdir(incoming), seconds=2)  # the timeout


# --- Malformed requests, on a raw socket ---

@pytest.mark.parametrize("request_bytes, status", [
    (b"hello\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
    (b"POST / HTTP/1.1\r\n\r\n", 405),
    (b"DELETE /incoming/a.csv HTTP/1.1\r\n\r\n", 405),
    (b"GET /etc/passwd HTTP/1.1\r\n\r\n", 404),
    (b"GET /files/%ff HTTP/1.1\r\n\r\n", 400),
])
@pytest.mark.asyncio
async def test_a_malformed_request_gets_its_status_and_the_server_goes_on(tmp_path,
                                                                         request_bytes, status):
    async with serving(tmp_path / "inbox") as served:
        response = await asyncio.to_thread(raw_exchange, served.port, request_bytes)
        assert status_of(response) == status
        assert b"\r\nCache-Control: no-store\r\n" in response
        if status == 405:
            assert b"\r\nAllow: " in response
        # and another client is served as ever
        assert (await get(served.port, "/healthz"))[2] == b"ok\n"


@pytest.mark.asyncio
async def test_a_client_too_slow_to_send_its_request_is_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(processor, "SERVE_TIMEOUT_S", 0.2)
    async with serving(tmp_path / "inbox") as served:
        started = time.monotonic()
        response = await asyncio.to_thread(raw_exchange, served.port, b"GET / HTT")
        assert status_of(response) == 408
        assert time.monotonic() - started < 5
        await wait_until(lambda: not served.server.http.handlers)


@pytest.mark.asyncio
async def test_one_connection_over_the_limit_gets_503(tmp_path, monkeypatch):
    monkeypatch.setattr(processor, "SERVE_MAX_CONNECTIONS", 2)
    async with serving(tmp_path / "inbox") as served:
        held = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(2)]
        try:
            await wait_until(lambda: len(served.server.http.handlers) == 2)
            response = await asyncio.to_thread(raw_exchange, served.port,
                                               b"GET /healthz HTTP/1.1\r\n\r\n")
            assert status_of(response) == 503
        finally:
            for raw in held:
                raw.close()
        await wait_until(lambda: not served.server.http.handlers)
        assert (await get(served.port, "/healthz"))[0] == 200


# --- The event stream ---

def read_events(port: int, until: str, seconds: float = 10.0) -> list[tuple[str, dict]]:
    """Read /events until an event of kind `until`; return each (kind, data), in order."""
    events = []
    with closing(http.client.HTTPConnection("127.0.0.1", port, timeout=seconds)) as connection:
        connection.request("GET", "/events")
        response = connection.getresponse()
        assert response.getheader("Content-Type") == "text/event-stream; charset=utf-8"
        kind = ""
        while True:
            line = response.fp.readline().decode()
            if line.startswith("event: "):
                kind = line.removeprefix("event: ").strip()
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
                if kind == until:
                    return events


@pytest.mark.asyncio
async def test_a_file_that_retries_then_completes_gives_its_events_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(processor, "SERVE_PROGRESS_S", 0.05)
    attempts = []

    async def failing_first(filename, **options):
        attempts.append(filename)
        if len(attempts) == 1:
            return processor.file_result(filename, "error", error="Permission denied",
                                         retryable=True)
        return await processor.process_file(filename, **options)

    async with serving(tmp_path / "inbox", retries=1, retry_delay=0.2, delay=0.02,
                       read_file=failing_first) as served:
        reading = asyncio.create_task(asyncio.to_thread(read_events, served.port, "finished"))
        await wait_until(lambda: served.server.http.streams)
        served.drop("flaky.csv", HEADER + "T1,C1,1.00,2024-01-01,x\n" * 250)
        events = await reading

    kinds = [kind for kind, _ in events]
    assert [kind for kind in kinds if kind != "progress"] == ["claimed", "retry", "finished"]
    assert "progress" in kinds[kinds.index("retry"):]
    assert events[1][1] | {"at": "when"} == {"name": "flaky.csv", "error": "Permission denied",
                                             "wait": pytest.approx(0.2, rel=0.11), "at": "when"}
    assert events[-1][1]["valid"] == 250 and events[-1][1]["total"] == "250.00"
    # and the retry is among the errors
    assert served.server.errors[0]["kind"] == "retry"


@pytest.mark.asyncio
async def test_a_stream_client_that_stops_reading_is_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(processor, "SERVE_STREAM_BACKLOG", 5)
    async with serving(tmp_path / "inbox") as served:
        with socket.socket() as raw:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            raw.connect(("127.0.0.1", served.port))
            raw.sendall(b"GET /events HTTP/1.1\r\n\r\n")
            await wait_until(lambda: served.server.http.streams)
            for sent in range(1, 2001):  # 100 MB at most, never read
                served.server.http.send("progress", {"padding": "x" * 50_000, "number": sent})
                await asyncio.sleep(0)
                if not served.server.http.streams:
                    break
            # Dropped well before the end: held back are only the socket buffers (the system's,
            # a few MB on loopback) and a backlog of 5 events.
            assert sent < 400
            await wait_until(lambda: not served.server.http.handlers)
            raw.setblocking(False)
            with pytest.raises((BlockingIOError, ConnectionResetError)):
                while raw.recv(1 << 20):
                    pass
                raise ConnectionResetError  # the end of the stream: it was closed


@pytest.mark.asyncio
async def test_a_quiet_stream_gets_a_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setattr(processor, "SERVE_PROGRESS_S", 0.02)
    monkeypatch.setattr(processor, "SERVE_HEARTBEAT_S", 0.05)
    async with serving(tmp_path / "inbox") as served:
        def two_heartbeats() -> bytes:
            with socket.create_connection(("127.0.0.1", served.port), timeout=5) as raw:
                raw.sendall(b"GET /events HTTP/1.1\r\n\r\n")
                received = b""
                while received.count(b": heartbeat\n\n") < 2:
                    received += raw.recv(4096)
                return received

        received = await asyncio.to_thread(two_heartbeats)
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\n\r\nretry: 2000\n: connected\n\n: heartbeat\n\n" in received


# --- Many clients while files are read ---

@pytest.mark.asyncio
async def test_fifty_clients_at_once_while_files_are_read_stall_the_loop_no_more_than_20_ms(
        tmp_path, bench):
    # The benchmark's own measurement: six files of 10,000 rows read by a served watch, while
    # 50 clients (at the lowest priority, so that they do not take the cores from the loop)
    # each fetch five pages; it checks the files were still being read when the clients ended.
    worst, clients = await bench.watch_with_probe(tmp_path / "inbox", 10_000, 50)

    answered, asked, _ = clients.split()
    assert (answered, asked) == ("250", "250")
    assert worst <= 0.020


# --- The program ---

def start_serving(root: Path, *options: str, env: dict[str, str] | None = None
                  ) -> tuple[subprocess.Popen, int]:
    """Start the watcher with --serve on a free port; return it and its port."""
    watcher = subprocess.Popen(
        [sys.executable, PROCESSOR, "--watch", str(root), "--poll", "0.05", "--settle", "0",
         "--serve", "127.0.0.1:0", *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    line = watcher.stderr.readline()
    while not line.startswith("Serving "):
        assert line, "the watcher ended before serving"
        line = watcher.stderr.readline()
    return watcher, int(line.split()[1].rstrip("/").rsplit(":", 1)[1])


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_with_clients_connected_stops_cleanly_leaving_no_temporary(tmp_path, how):
    root = tmp_path / "inbox"
    watcher, port = start_serving(root, env={processor.SERVE_TOKEN_VARIABLE: TOKEN})
    stream = socket.create_connection(("127.0.0.1", port))
    upload = socket.create_connection(("127.0.0.1", port))
    try:
        stream.sendall(b"GET /events HTTP/1.1\r\n\r\n")
        upload.sendall(f"PUT /incoming/half.csv HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                       f"Content-Length: 100000\r\n\r\n{HEADER}".encode())
        deadline = time.monotonic() + 10
        while not any(name.endswith(".upload") for name in os.listdir(root / "incoming")):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        watcher.send_signal(how)
        stdout, stderr = watcher.communicate(timeout=30)
    finally:
        stream.close()
        upload.close()
        watcher.kill()

    assert watcher.returncode == 128 + how
    assert os.listdir(root / "incoming") == []
    assert "Traceback" not in stderr and "Exception" not in stderr and "Task" not in stderr
    assert stdout.startswith(f"Stopped watching {root} after ")


def test_an_uploaded_file_is_processed_by_the_program(tmp_path):
    root = tmp_path / "inbox"
    watcher, port = start_serving(root, "--delay", "0",
                                  env={processor.SERVE_TOKEN_VARIABLE: TOKEN})
    try:
        status, _, _ = fetch(port, "PUT", "/incoming/client.csv", GOOD.encode(),
                             {"Authorization": f"Bearer {TOKEN}"})
        assert status == 201
        deadline = time.monotonic() + 10
        while fetch(port, "GET", "/files/client.csv")[2].count(b'"completed"') == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        watcher.send_signal(signal.SIGTERM)
        _, stderr = watcher.communicate(timeout=30)
    assert f"finished {root / 'done' / 'client.csv'} (3 valid, 1 rejected)" in stderr


def test_a_port_in_use_is_a_one_line_error_before_anything_is_claimed(tmp_path):
    root = tmp_path / "inbox"
    (root / "incoming").mkdir(parents=True)
    (root / "incoming" / "waiting.csv").write_text(GOOD)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        finished = subprocess.run(
            [sys.executable, PROCESSOR, "--watch", str(root), "--settle", "0", "--serve",
             str(port)], capture_output=True, text=True, timeout=30)

    assert finished.returncode == 2
    assert finished.stderr == (f"processor.py: error: cannot serve on 127.0.0.1:{port}: "
                               "Address already in use\n")
    assert finished.stdout == ""
    assert os.listdir(root / "incoming") == ["waiting.csv"]


def test_serving_beyond_this_machine_without_a_token_is_warned_of(tmp_path):
    watcher = subprocess.Popen(
        [sys.executable, PROCESSOR, "--watch", str(tmp_path / "inbox"), "--serve", "0.0.0.0:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={key: value for key, value in os.environ.items()
             if key != processor.SERVE_TOKEN_VARIABLE})
    try:
        lines = [watcher.stderr.readline() for _ in range(3)]
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.communicate(timeout=30)
    assert lines[1].startswith("Serving http://0.0.0.0:")
    assert lines[1].endswith(f"(uploads off: set {processor.SERVE_TOKEN_VARIABLE} to take them)\n")
    assert lines[2].startswith("processor.py: warning: http://0.0.0.0:")
    assert "is open to the network" in lines[2]


@pytest.mark.parametrize("args, message", [
    (["--serve", "8080", "x.csv"], "--serve needs --watch"),
    (["--watch", "w", "--max-upload", "5MB"], "--max-upload needs --serve"),
    (["--watch", "w", "--serve", "host:port"], "not [HOST:]PORT"),
    (["--watch", "w", "--serve", "1", "--max-upload", "lots"], "not a size"),
])
def test_serve_options_out_of_place_are_usage_errors(args, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        processor.main(args)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


# --- What a hunt for breakage found ---

@pytest.mark.asyncio
async def test_a_client_that_resets_after_its_request_disturbs_nothing(tmp_path):
    async with serving(tmp_path / "inbox") as served:
        for _ in range(10):
            with socket.create_connection(("127.0.0.1", served.port)) as raw:
                raw.sendall(b"GET /stats HTTP/1.1\r\n\r\n")
                # Closed with a linger of 0 seconds: a reset, not an end of file.
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
        await wait_until(lambda: not served.server.http.handlers)
        assert (await get(served.port, "/healthz"))[0] == 200
    # and serving() found nothing logged


@pytest.mark.asyncio
async def test_a_bug_in_an_answer_gets_500_and_one_line_and_the_server_goes_on(
        tmp_path, monkeypatch, capsys):
    def broken(self):
        raise RuntimeError("a bug")

    async with serving(tmp_path / "inbox") as served:
        monkeypatch.setattr(processor.WatchServer, "stats", broken)
        assert await get_json(served.port, "/stats", 500) == {"error": "unexpected RuntimeError"}
        assert (await get(served.port, "/healthz"))[0] == 200
    assert ("processor.py: unexpected RuntimeError answering GET /stats: a bug\n"
            in capsys.readouterr().err)


@pytest.mark.parametrize("path", ["/files/%2Fetc%2Fpasswd", "/files/..", "/files/",
                                  "/files/.processor.lock", "/files/%2E%2E%2Fresults.jsonl"])
@pytest.mark.asyncio
async def test_files_name_tells_nothing_of_paths_outside_the_watch(tmp_path, path):
    async with serving(tmp_path / "inbox") as served:
        assert "not a name the watcher takes" in (await get_json(served.port, path, 404))["error"]


@pytest.mark.asyncio
async def test_a_name_that_failed_and_is_sent_again_shows_the_new_file_first(tmp_path):
    # A second to settle: time to ask for the file while it waits.
    async with serving(tmp_path / "inbox", token=TOKEN, settle=1.0) as served:
        assert (await put(served.port, "again.csv", NO_AMOUNT.encode()))[0] == 201
        await wait_until(lambda: served.session.failed == 1)
        assert (await get_json(served.port, "/files/again.csv"))["status"] == "error"

        # The same name again: one in failed/ does not count, a client may send it fixed.
        assert (await put(served.port, "again.csv", GOOD.encode()))[0] == 201
        assert (await get_json(served.port, "/files/again.csv"))["status"] == "waiting"
        await wait_until(lambda: served.session.done == 1)
        assert (await get_json(served.port, "/files/again.csv"))["status"] == "completed"


@pytest.mark.asyncio
async def test_the_history_is_read_by_one_thread_at_a_time(tmp_path, monkeypatch):
    reading, most = 0, 0
    real_history = processor.history

    def counted(*args, **choice):
        nonlocal reading, most
        reading += 1
        most = max(most, reading)
        time.sleep(0.05)
        try:
            return real_history(*args, **choice)
        finally:
            reading -= 1

    monkeypatch.setattr(processor, "history", counted)
    loop = asyncio.get_running_loop()
    async with serving(tmp_path / "inbox") as served:
        # The clients' threads are their own: in the loop's pool they would take the threads
        # the server reads with.
        with ThreadPoolExecutor(8) as clients:
            answers = await asyncio.gather(*(
                loop.run_in_executor(clients, fetch, served.port, "GET", path)
                for path in ["/files", "/files/x.csv", "/", "/files?offset=3"] * 2))
    assert [status for status, _, _ in answers] == [200, 404, 200, 200] * 2
    assert most == 1


@pytest.mark.asyncio
async def test_lines_that_are_not_results_are_skipped_and_no_results_file_is_no_history(tmp_path):
    async with serving(tmp_path / "inbox") as served:
        results = tmp_path / "inbox" / "results.jsonl"
        results.write_text(result_line("/w/done/kept.csv") + '123\n[1, 2]\n{}\n'
                           '{"filename": null}\n{"filename": "/w/done/partial.csv"}\n')
        history = await get_json(served.port, "/files")
        assert [result["filename"] for result in history["files"]] == ["/w/done/kept.csv"]
        assert (await get(served.port, "/"))[0] == 200
        results.unlink()
        assert (await get_json(served.port, "/files"))["files"] == []
        assert (await get(served.port, "/"))[0] == 200
        await get_json(served.port, "/files/kept.csv", 404)


@pytest.mark.asyncio
async def test_a_stream_client_that_closes_frees_its_place_at_once(tmp_path):
    async with serving(tmp_path / "inbox") as served:
        with socket.create_connection(("127.0.0.1", served.port)) as raw:
            raw.sendall(b"GET /events HTTP/1.1\r\n\r\n")
            await wait_until(lambda: served.server.http.streams)
        # well before the next event or heartbeat (15 s)
        await wait_until(lambda: not served.server.http.handlers, seconds=2)
        assert not served.server.http.streams


@pytest.mark.asyncio
async def test_an_upload_that_trickles_is_dropped_by_its_deadline(tmp_path, monkeypatch):
    monkeypatch.setattr(processor, "SERVE_TIMEOUT_S", 0.5)
    monkeypatch.setattr(processor, "SERVE_MIN_UPLOAD_RATE", 1000)
    incoming = tmp_path / "inbox" / "incoming"
    async with serving(tmp_path / "inbox", token=TOKEN) as served:
        # 100 bytes at 1000 a second or more: a deadline of 0.5 + 0.1 s, where a byte every
        # 0.2 s, never silent for the 0.5 s of one read, would take 20 s.
        with socket.create_connection(("127.0.0.1", served.port)) as raw:
            raw.sendall(f"PUT /incoming/slow.csv HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                        "Content-Length: 100\r\n\r\n".encode())
            started = time.monotonic()
            while served.server.http.handlers and time.monotonic() - started < 5:
                with suppress(OSError):
                    raw.sendall(b"x")
                await asyncio.sleep(0.2)
            assert time.monotonic() - started < 2
        await wait_until(lambda: not os.listdir(incoming))


@pytest.mark.parametrize("headers, status", [
    ({"Transfer-Encoding": "chunked", "Content-Length": "5", "Authorization": f"Bearer {TOKEN}"},
     411),
    ({"Authorization": TOKEN}, 401),  # the token without its scheme
    ({"Authorization": f"Basic {TOKEN}"}, 401),
    ({"Authorization": f"bearer {TOKEN}"}, 201),  # a scheme's case does not matter
])
@pytest.mark.asyncio
async def test_an_upload_needs_one_plain_length_and_a_bearer_token(tmp_path, headers, status):
    async with serving(tmp_path / "inbox", token=TOKEN) as served:
        answered, _, _ = await put(served.port, "a.csv", b"hello", token=None, **headers)
        assert answered == status


# --- What a review found ---

@pytest.mark.asyncio
async def test_a_server_that_fails_says_so_closes_its_port_and_the_watcher_goes_on(
        tmp_path, monkeypatch, capsys):
    def broken(folder):
        raise RuntimeError("a bug")

    monkeypatch.setattr(processor, "remove_unfinished_uploads", broken)
    said = ""

    def stopped() -> bool:
        nonlocal said
        said += capsys.readouterr().err
        return "has stopped" in said

    async with serving(tmp_path / "inbox") as served:
        await wait_until(stopped)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", served.port), timeout=5)
        served.drop("good.csv", GOOD)
        await wait_until(lambda: served.session.done == 1)
    assert "processor.py: the server has stopped: unexpected RuntimeError: a bug\n" in said


@pytest.mark.asyncio
async def test_a_bug_in_a_server_hook_is_one_line_and_the_watcher_goes_on(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(processor, "brief_result", lambda result: 1 / 0)
    async with serving(tmp_path / "inbox") as served:
        served.drop("good.csv", GOOD)
        served.drop("other.csv", OTHER)
        await wait_until(lambda: served.session.done == 2)
    err = capsys.readouterr().err
    assert err.count("processor.py: unexpected ZeroDivisionError in the server's finished hook: "
                     "division by zero\n") == 2
    assert "Traceback" not in err


@pytest.mark.asyncio
async def test_uploads_left_half_written_by_a_run_that_stopped_are_removed_at_start(tmp_path):
    incoming = tmp_path / "inbox" / "incoming"
    incoming.mkdir(parents=True)
    (incoming / ".a.csv.0123456789ab.upload").write_text("half")
    (incoming / ".kept.csv").write_text("someone else's hidden upload")
    async with serving(tmp_path / "inbox") as served:
        await wait_until(lambda: served.server.batch is not None)
        await get(served.port, "/healthz")
        assert os.listdir(incoming) == [".kept.csv"]


@pytest.mark.asyncio
async def test_a_name_being_uploaded_gets_409_and_a_413_is_sent_before_100_continue(tmp_path):
    async with serving(tmp_path / "inbox", token=TOKEN, max_upload=100) as served:
        head = (f"PUT /incoming/a.csv HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                "Content-Length: 50\r\n").encode()
        with socket.create_connection(("127.0.0.1", served.port)) as first:
            first.sendall(head + b"\r\n" + b"x" * 10)  # 40 bytes still to come
            await wait_until(lambda: served.server.uploading)
            status, _, body = await put(served.port, "a.csv", b"y" * 50)
            assert (status, json.loads(body)["error"]) == (409, "a.csv is being uploaded already")

        def too_large() -> bytes:
            return raw_exchange(served.port, f"PUT /incoming/b.csv HTTP/1.1\r\nAuthorization: "
                                             f"Bearer {TOKEN}\r\nContent-Length: 101\r\n"
                                             "Expect: 100-continue\r\n\r\n".encode())
        response = await asyncio.to_thread(too_large)
        assert response.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n")  # no 100 first


def test_the_command_line_plugs_in_the_limit_the_settings_and_the_database(tmp_path):
    root = tmp_path / "inbox"
    watcher, port = start_serving(root, "--delay", "0", "--max-upload", "1KiB", "--workers", "1",
                                  "--db", str(tmp_path / "results.db"),
                                  env={processor.SERVE_TOKEN_VARIABLE: TOKEN})
    try:
        too_large = fetch(port, "PUT", "/incoming/big.csv", b"x" * 1025,
                          {"Authorization": f"Bearer {TOKEN}"})
        settings = json.loads(fetch(port, "GET", "/stats")[2])["settings"]
        assert fetch(port, "PUT", "/incoming/client.csv", GOOD.encode(),
                     {"Authorization": f"Bearer {TOKEN}"})[0] == 201
        deadline = time.monotonic() + 10
        while b'"completed"' not in fetch(port, "GET", "/files/client.csv")[2]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.communicate(timeout=30)

    assert too_large[0] == 413
    assert settings == {"max_concurrent": 3, "delay": 0.0, "retries": 0, "retry_delay": 0.5,
                        "poll": 0.05, "settle": 0.0, "workers": 1, "uploads": True,
                        "max_upload": 1024}
    with closing(sqlite3.connect(tmp_path / "results.db")) as db:
        assert db.execute("SELECT COUNT(*) FROM file_results").fetchone() == (1,)
