"""Run processor.py as a script that pauses at one moment of its run: the signal tests' window.

Usage: python tests/pause_at.py MOMENT [processor.py's arguments]

MOMENT is one of:
    imports     while processor.py imports asyncio, before main is called
    arguments   while main parses its arguments
    database    while the --db writer thread opens the database (main waits for it)
    loop        while the batch's event loop is made, before it runs
    curses      inside curses start-up, after initscr and before the rest is set up
    handlers    as main's stop signal handlers are put back (StopSignals.__exit__), after the
                first of them, SIGINT's: the others are still main's

At that moment it writes `paused at MOMENT` to stderr and sleeps, for the test to send a signal:
30 s, or 2 s at loop and curses, where processor.py holds signals back until they are set up.
processor.py itself has no hook for this: each pause wraps a function of the standard library.
"""
import importlib.abc
import runpy
import sys
import time
from pathlib import Path

PROCESSOR = str(Path(__file__).resolve().parent.parent / "processor.py")


def pause(moment: str) -> None:
    print(f"paused at {moment}", file=sys.stderr, flush=True)
    time.sleep(2 if moment in ("loop", "curses") else 30)


def pausing(moment: str, function):
    def paused(*args, **kwargs):
        result = function(*args, **kwargs)
        pause(moment)
        return result
    return paused


class PauseOnImport(importlib.abc.MetaPathFinder):
    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, name, path, target=None):
        if name == self.name:
            sys.meta_path.remove(self)
            pause("imports")
        return None  # the usual finders import it


def arrange(moment: str) -> None:
    if moment == "imports":
        sys.meta_path.insert(0, PauseOnImport("asyncio"))
    elif moment == "arguments":
        import argparse
        argparse.ArgumentParser.parse_args = pausing(moment, argparse.ArgumentParser.parse_args)
    elif moment == "database":
        import sqlite3
        sqlite3.connect = pausing(moment, sqlite3.connect)
    elif moment == "loop":
        import asyncio
        asyncio.events.new_event_loop = pausing(moment, asyncio.events.new_event_loop)
    elif moment == "curses":
        import curses
        curses.initscr = pausing(moment, curses.initscr)
    elif moment == "handlers":
        import signal
        real_signal = signal.signal

        def putting_back(number, handler):
            previous = real_signal(number, handler)
            if sys._getframe(1).f_code.co_name == "__exit__":  # StopSignals', once
                signal.signal = real_signal
                pause(moment)
            return previous

        signal.signal = putting_back
    else:
        raise SystemExit(f"pause_at.py: unknown moment {moment}")


if __name__ == "__main__":
    arrange(sys.argv[1])
    sys.argv = [PROCESSOR, *sys.argv[2:]]
    runpy.run_path(PROCESSOR, run_name="__main__")
