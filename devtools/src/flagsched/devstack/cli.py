"""``flagsched dev up|down|status|env``: manage the local dev stack from a shell.

The commands always act on the local stack in ``{dev_home}/run``; stdout
carries only machine-readable output (export lines, JSON), so
``eval "$(flagsched dev up)"`` works. Progress and timing go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence

from flagsched.devstack.stack import DevStack
from flagsched.runtime.errors import FlagschedError
from flagsched.runtime.settings import Settings, load_settings

log = logging.getLogger(__name__)

# The same shape as flagsched.cli's handlers: (parsed arguments, settings) -> exit code.
Handler = Callable[[argparse.Namespace, Settings], int]


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    """Start the stack (idempotent); print export lines, and the time taken to stderr."""
    stack = DevStack.from_settings(settings)
    started = time.monotonic()
    endpoints = stack.up()
    elapsed = time.monotonic() - started
    print("\n".join(endpoints.export_lines()))
    print(f"dev stack up in {elapsed:.1f}s (run dir {stack.run_dir})", file=sys.stderr)
    return 0


def cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    """Stop the stack; its data stays for the next ``up``."""
    stack = DevStack.from_settings(settings)
    started = time.monotonic()
    stack.down()
    print(f"dev stack down in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print the stack's status as JSON."""
    print(json.dumps(DevStack.from_settings(settings).status(), indent=2))
    return 0


def cmd_env(args: argparse.Namespace, settings: Settings) -> int:
    """Print export lines; exit 1 when the stack is not up."""
    stack = DevStack.from_settings(settings)
    if not stack.is_up():
        print("dev stack is not up: run `flagsched dev up`", file=sys.stderr)
        return 1
    print("\n".join(stack.env_lines()))
    return 0


_COMMANDS: dict[str, tuple[Handler, str]] = {
    "up": (cmd_up, "start local Kafka and PostgreSQL (idempotent); print export lines"),
    "down": (cmd_down, "stop them; data is kept for the next up"),
    "status": (cmd_status, "print whether each server runs, as JSON (the DSN redacted)"),
    "env": (
        cmd_env,
        "print export lines for a running stack, for eval: the values themselves, a "
        "password included (exit 1 if not up)",
    ),
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``dev`` command; each subcommand sets ``handler(args, settings) -> int``."""
    dev = subparsers.add_parser(
        "dev",
        help="run a local Kafka and PostgreSQL for development and tests",
        description=(
            "A real Apache Kafka (KRaft) and a throwaway PostgreSQL on loopback ports, "
            'kept under FLAGSCHED_DEV_HOME/run. Use: eval "$(flagsched dev up)".'
        ),
    )
    commands = dev.add_subparsers(dest="dev_command", required=True, metavar="COMMAND")
    for name, (handler, help_text) in _COMMANDS.items():
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(handler=handler)


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``dev ...`` arguments and run the command; errors become one stderr line."""
    parser = argparse.ArgumentParser(prog="flagsched")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        # kafka-python narrates every connection at INFO; only its problems matter here.
        logging.getLogger("kafka").setLevel(logging.WARNING)
    handler: Handler = args.handler
    try:
        return handler(args, load_settings())
    except FlagschedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
