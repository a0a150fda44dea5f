import io
import sys
from typing import Callable

import pytest

import processor


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


@pytest.fixture
def terminal(monkeypatch) -> FakeTerminal:
    """Make stderr a terminal whose output the test can read."""
    fake = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", fake)
    monkeypatch.setattr(processor.status_line, "width", 0)
    return fake
