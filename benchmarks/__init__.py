"""Benchmarks (not part of the installed package); see README.md."""

import sys


def command_line(module: str, argv: list[str] | None) -> str:
    """How a benchmark was run, for its JSON: ``python -m MODULE ARGS`` (``argv`` None: this
    process's arguments)."""
    return " ".join(["python -m", module, *(sys.argv[1:] if argv is None else argv)])
