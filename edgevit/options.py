"""Command-line options that several commands share, defined once so each flag name means
one thing everywhere:

* ``-o/--output FILE`` names a file a command writes; ``--out DIR`` a folder it writes into;
* ``-q/--quiet`` turns off progress bars and status lines (results are still printed);
* ``--top-k N`` is the number of classes reported per image, :data:`DEFAULT_TOP_K` by default;
* counts (``--top-k``, ``--limit``) are :func:`positive_int`: 0 or -5 is an error, never
  silently "all" or "all but five";
* ``--batch-size N`` is images per call; ``--data`` an image source (``digits`` or a folder).

Options of one stage live with that stage (the runtime's in :mod:`edgevit.runtime.cli_args`).
"""

from __future__ import annotations

import argparse

from edgevit.config import DEFAULT_TOP_K


def positive_int(text: str) -> int:
    """argparse ``type`` for a count: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_quiet(p: argparse.ArgumentParser, what: str = "progress bars and status lines") -> None:
    p.add_argument("-q", "--quiet", action="store_true", help=f"no {what}")


def add_top_k(p: argparse.ArgumentParser, per: str = "image") -> None:
    p.add_argument(
        "--top-k",
        type=positive_int,
        default=DEFAULT_TOP_K,
        help=f"classes reported per {per} (default {DEFAULT_TOP_K})",
    )


def add_output(p: argparse.ArgumentParser, help: str, required: bool = False) -> None:
    p.add_argument("-o", "--output", required=required, help=help)


def add_out_dir(p: argparse.ArgumentParser, help: str, default: str | None = None) -> None:
    p.add_argument("--out", default=default, help=help)


def add_data(p: argparse.ArgumentParser, help: str, default: str | None = None) -> None:
    p.add_argument("--data", default=default, help=help)


def add_switch(p: argparse.ArgumentParser, name: str, default: bool, help: str) -> None:
    """``--name`` / ``--no-name`` (argparse's BooleanOptionalAction needs Python 3.9)."""
    dest = name.replace("-", "_")
    state = "on" if default else "off"
    p.add_argument(f"--{name}", dest=dest, action="store_true", default=default, help=f"{help} (default {state})")
    p.add_argument(f"--no-{name}", dest=dest, action="store_false", help=f"turn --{name} off")
