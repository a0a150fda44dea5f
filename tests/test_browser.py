"""--serve's page in a real browser: headless Chromium, driven over its DevTools protocol, keeps
the page open while files arrive, and the page must update itself through /events.

No browser library is needed. Started with --remote-debugging-pipe, Chromium reads commands on
its file descriptor 3 and writes its answers on its descriptor 4: JSON messages, each ended by a
NUL byte. The test is skipped where no Chromium is installed."""
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

PROCESSOR = str(Path(__file__).resolve().parent.parent / "processor.py")
CSV = ("transaction_id,customer_id,amount,date,category\n"
       "T1,C1,12.50,2024-01-02,food\n"
       "T2,C2,7.25,2024-01-03,fuel\n")

# What the page shows, read from the DOM as the browser rendered it, after the page's own
# JavaScript ran: the counts table as {folder: count}, the "Up N s, K files processed" line, the
# line that says whether the event stream is open, and whether the <main> the test marked is
# still there (the page swaps in a new <main> each time it redraws itself).
READ_PAGE = """(() => {
  const counts = document.querySelector("main .counts");
  if (!counts) return null;  // not loaded yet
  const names = [...counts.querySelectorAll("th")].map(cell => cell.innerText.trim());
  const values = [...counts.querySelectorAll("td")].map(cell => cell.innerText.trim());
  return {
    counts: Object.fromEntries(names.map((name, i) => [name, values[i]])),
    summary: document.querySelector("main p").innerText,
    live: document.getElementById("live").innerText,
    marked_main: document.querySelector("main").dataset.marked === "yes",
    same_document: window.loadedOnce === true,
  };
})()"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


class DevTools:
    """Chromium's DevTools protocol over two pipes: send a command, get its answer."""

    def __init__(self, commands: int, answers: int) -> None:
        self.commands = commands  # our end of Chromium's fd 3
        self.answers = answers    # our end of Chromium's fd 4
        self.unread = b""
        self.last_id = 0

    def call(self, method: str, session: str | None = None, timeout: float = 10.0,
             **params: Any) -> dict[str, Any]:
        """Send one command (to a page when `session` is given) and return its result."""
        self.last_id += 1
        message: dict[str, Any] = {"id": self.last_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        # One small write: a pipe takes up to 64 KiB without blocking, and no reader is needed yet.
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self.receive(deadline)
            # Events (no "id") and answers to nothing we wait for are let go.
            if answer.get("id") == self.last_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def receive(self, deadline: float) -> dict[str, Any]:
        """Return the next message, waiting no later than the deadline: a Chromium that hangs
        must fail the test, not hang it."""
        while b"\0" not in self.unread:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.answers], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.answers, 65536)
            if not chunk:
                raise EOFError("Chromium closed its end of the pipe (did it crash?)")
            self.unread += chunk
        message, _, self.unread = self.unread.partition(b"\0")
        return json.loads(message)


def start_chromium(chromium: str, profile: Path) -> tuple[subprocess.Popen, DevTools]:
    """Start headless Chromium with its DevTools protocol on fds 3 and 4."""
    to_chromium, commands = os.pipe()  # we write `commands`, Chromium reads `to_chromium`
    answers, from_chromium = os.pipe()

    def put_pipes_on_3_and_4() -> None:
        # Runs in the child between fork and exec. The pipe ends may already sit on 3 or 4, so
        # they are first copied above 10, then onto 3 and 4; dup2 also makes the copies survive
        # exec (os.pipe's descriptors do not).
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chromium, from_chromium)]
        for target, fd in zip((3, 4), high):
            os.dup2(fd, target)
            os.close(fd)

    process = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox",  # no sandbox: the tests may run as root
         "--disable-gpu", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
         f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # close_fds=False, or fds 3 and 4 would be closed after put_pipes_on_3_and_4 ran. Python
        # opens its own descriptors non-inheritable, so no other one leaks to Chromium.
        close_fds=False, preexec_fn=put_pipes_on_3_and_4,
        # A process group of its own: Chromium starts helper processes, and the test kills the
        # whole group at the end.
        start_new_session=True)
    # Chromium has its copies; ours must go, or we would never see the pipe's end if it died.
    os.close(to_chromium)
    os.close(from_chromium)
    return process, DevTools(commands, answers)


def stop_chromium(process: subprocess.Popen, devtools: DevTools) -> None:
    try:
        devtools.call("Browser.close", timeout=5)
    except (OSError, EOFError, TimeoutError, RuntimeError):
        pass  # it is killed below all the same
    os.close(devtools.commands)
    os.close(devtools.answers)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the helper processes too, if any is left
    except ProcessLookupError:
        pass
    process.wait()


def start_watcher(root: Path, stderr_path: Path) -> tuple[subprocess.Popen, str]:
    """Start the watcher with --serve on a free port and return it with the page's address."""
    with open(stderr_path, "w") as stderr:  # a file, not a pipe: nothing has to keep reading it
        watcher = subprocess.Popen(
            [sys.executable, PROCESSOR, "--watch", str(root), "--serve", "127.0.0.1:0",
             "--settle", "0", "--poll", "0.05", "--delay", "0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in stderr_path.read_text().splitlines():
            if line.startswith("Serving http://"):
                return watcher, line.split()[1]
        if watcher.poll() is not None:
            break
        time.sleep(0.02)
    watcher.kill()
    watcher.wait()
    pytest.fail(f"the watcher never said where it serves:\n{stderr_path.read_text()}")


def wait_for_page(devtools: DevTools, page: str, condition: Callable[[dict[str, Any]], bool],
                  seconds: float = 15.0) -> dict[str, Any]:
    """Read the page until it meets the condition, and return what it showed then."""
    deadline = time.monotonic() + seconds
    shown: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        answer = devtools.call("Runtime.evaluate", session=page, expression=READ_PAGE,
                               returnByValue=True)
        shown = answer["result"].get("value")
        if shown is not None and condition(shown):
            return shown
        time.sleep(0.05)
    pytest.fail(f"the page never got there; it last showed {shown}")


def test_the_page_shows_each_file_done_as_it_happens_without_being_reloaded(tmp_path):
    chromium_path = find_chromium()
    if chromium_path is None:
        pytest.skip("no chromium, chromium-browser or google-chrome on PATH")
    root, watcher_log = tmp_path / "inbox", tmp_path / "watcher.stderr"
    watcher, url = start_watcher(root, watcher_log)
    chromium = devtools = None
    try:
        chromium, devtools = start_chromium(chromium_path, tmp_path / "chromium-profile")
        target = devtools.call("Target.createTarget", url=url)["targetId"]
        # flatten: the page's commands go on the same pipe, told apart by their sessionId.
        page = devtools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

        # Wait for the event stream to be open...
        before = wait_for_page(devtools, page, lambda shown: shown["live"].startswith("Live:"))
        assert before["counts"] == {"incoming": "0", "processing": "0", "done": "0", "failed": "0"}
        # ...and for the redraw it starts when it opens (a second later) to be over: mark this
        # <main> and wait for it to be replaced. From then on, only an event can redraw the page.
        # window.loadedOnce would be lost if the page were loaded again.
        devtools.call("Runtime.evaluate", session=page,
                      expression='document.querySelector("main").dataset.marked = "yes";'
                                 "window.loadedOnce = true;")
        wait_for_page(devtools, page, lambda shown: not shown["marked_main"])

        # Drop two files, as a client does: written elsewhere, then renamed in whole.
        for name in ("a.csv", "b.csv"):
            (tmp_path / name).write_text(CSV)
            os.replace(tmp_path / name, root / "incoming" / name)

        after = wait_for_page(devtools, page, lambda shown: shown["counts"]["done"] == "2"
                              and "2 files processed" in shown["summary"])
        assert after["counts"] == {"incoming": "0", "processing": "0", "done": "2", "failed": "0"}
        assert after["same_document"], "the page was loaded again instead of updating itself"
    finally:
        if chromium is not None and devtools is not None:
            stop_chromium(chromium, devtools)
        watcher.send_signal(signal.SIGTERM)
        try:
            watcher.wait(timeout=10)
        except subprocess.TimeoutExpired:
            watcher.kill()
            watcher.wait()
        print(watcher_log.read_text())  # pytest shows it if the test failed
