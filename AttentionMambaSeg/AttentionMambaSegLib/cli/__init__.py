"""The ``attention-mamba-seg`` console command: one subcommand per stage.

Each subcommand lives in its own module of this package and exposes ``add_parser(subparsers)``, which
registers an argparse sub-parser whose ``func`` default takes the parsed namespace and returns an
exit code. Subcommands only parse and call the public functions of the library.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__

# Subcommand modules, in the order ``--help`` lists them.
_SUBCOMMANDS = ("segment", "demo", "models", "train", "evaluate", "doctor")


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="attention-mamba-seg",
        description="Attention-Mamba medical image segmentation (arXiv 2402.02286).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("Interrupted: no partial output was left behind.", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # FileNotFoundError, PermissionError, IsADirectoryError, disk full, ...
        print(f"error: {_os_error_message(e)}", file=sys.stderr)
        return 1


def _os_error_message(error: OSError) -> str:
    """A readable message for an OSError: ours carry a sentence; the system's carry errno and a file name."""
    if error.filename is None or error.strerror is None:
        return str(error)
    target = f"{error.filename}" + (f" -> {error.filename2}" if error.filename2 else "")
    return f"{error.strerror}: {target}. Check the path and its permissions."


if __name__ == "__main__":
    sys.exit(main())
