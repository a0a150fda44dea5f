"""README.md's "How it works" names the code it explains: every name it gives must be in processor.py."""
import ast
import importlib
import keyword
import re
from pathlib import Path

import processor

ROOT = Path(__file__).resolve().parent.parent
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FILE_SUFFIXES = {"py", "csv", "jsonl", "db", "md", "lock", "tmp", "gz"}


def how_it_works() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("\n## How it works\n", 1)[1].split("\n## ", 1)[0]


def names_in_processor() -> set[str]:
    """Return every name processor.py defines or uses: functions, classes, parameters, fields,
    attributes and variables."""
    tree = ast.parse((ROOT / "processor.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # a result's keys are strings in the dict that builds it
    return names


def missing_from_code(token: str, names: set[str]) -> bool:
    """Whether a backquoted token in the README looks like code of processor.py, or of a module
    it uses, that is not there."""
    parts = token.split(".")
    if not all(IDENTIFIER.fullmatch(part) for part in parts):
        return False  # an option, a path, a frame of the spinner: not a name
    if len(parts) == 1:
        return not (keyword.iskeyword(token) or token in names)
    if parts[-1] in FILE_SUFFIXES:
        return False  # processor.py, results.jsonl: a file's name
    owner = getattr(processor, parts[0], None)
    if isinstance(owner, type):  # RejectsFile.write: a class of processor.py and its method
        return not hasattr(owner, parts[1])
    try:
        module = importlib.import_module(parts[0]) if parts[0] in names else None
    except ImportError:
        module = None
    if module is not None:  # asyncio.create_task, os.rename: a module processor.py uses
        return not hasattr(module, parts[1])
    return not all(part in names for part in parts)  # batch.slots: a variable's attribute


def test_how_it_works_names_only_what_processor_py_has():
    names = names_in_processor()
    tokens = re.findall(r"`([^`]+)`", how_it_works())
    named = {re.sub(r"\(.*\)$", "", token) for token in tokens}  # `getch()` names getch

    assert len(named) > 50  # the section was found, and names the code
    assert sorted(token for token in named if missing_from_code(token, names)) == []


def test_how_it_works_cites_no_line_numbers():
    assert re.findall(r"\(line \d+\)|line \d+\)", how_it_works()) == []
