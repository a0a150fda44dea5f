import importlib.util
import io
import os
import sys
from pathlib import Path
from typing import Callable

import pytest

import processor

# pytest imports readline, which may set COLUMNS and LINES in the environment that the tests'
# subprocesses inherit, unseen in os.environ: a report would then be fitted to 80 columns.
# A test that wants a width sets COLUMNS itself.
os.unsetenv("COLUMNS")
os.unsetenv("LINES")


@pytest.fixture
def write_csv(tmp_path) -> Callable[[str, str | bytes], str]:
    """Return a function that writes text (byte for byte, line endings kept) or bytes to a file
    in this test's folder and returns its path as a string."""
    def write(name: str, content: str | bytes) -> str:
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return str(path)
    return write


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True

    def visible_line(self) -> str:
        """Return what a terminal would show on the cursor's line: `\r` returns to its start."""
        shown: list[str] = []
        column = 0
        for char in self.getvalue().rsplit("\n", 1)[-1]:
            if char == "\r":
                column = 0
                continue
            shown[column:column + 1] = [char]
            column += 1
        return "".join(shown)


@pytest.fixture
def fast_path_answers(monkeypatch) -> list[bool]:
    """Return a list that gets, for each chunk process_file reads, whether the faster reader
    took it (True) or left it to the csv module (False)."""
    answers: list[bool] = []
    real_fold = processor.fold_simple_chunk

    def recording_fold(*args):
        folded = real_fold(*args)
        answers.append(folded is not None)
        return folded

    monkeypatch.setattr(processor, "fold_simple_chunk", recording_fold)
    return answers


@pytest.fixture
def fake_terminal(monkeypatch) -> Callable[[], FakeTerminal]:
    """Return a function that makes stderr a terminal whose output the test can read.

    Call it in the test itself: pytest's output capturing sets sys.stderr again between the
    fixtures' setup and the test, which would undo a fixture's patch.
    """
    def make() -> FakeTerminal:
        fake = FakeTerminal()
        monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: no line is cut to fit
        monkeypatch.setattr(sys, "stderr", fake)
        monkeypatch.setattr(processor.status_line, "width", 0)
        return fake
    return make


@pytest.fixture
def change_mid_read(monkeypatch) -> Callable[[Callable[[], None]], None]:
    """Return a function that makes process_file's next read call change(), as a client still
    writing the file would, right after the read's first chunk of rows."""
    def arrange(change: Callable[[], None]) -> None:
        real_fold_chunk = processor.ChunkReader.fold_chunk
        chunks = []

        def folding_then_changing(reader, tally):
            count = real_fold_chunk(reader, tally)
            chunks.append(count)
            if len(chunks) == 1:
                change()
            return count

        monkeypatch.setattr(processor.ChunkReader, "fold_chunk", folding_then_changing)
    return arrange


@pytest.fixture(scope="session")
def bench():
    """Return benchmarks/bench.py as a module, for a test that makes its measurement."""
    # benchmarks/ is not a package, so bench.py is loaded from its path.
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"
    spec = importlib.util.spec_from_file_location("bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
