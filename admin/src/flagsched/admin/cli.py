"""The admin CLI verbs: ``flagsched admin serve|token|openapi``, ``flagsched schedules
...``, ``flagsched dead-letters ...``, ``flagsched redrives show``. Registering them is
cheap: the handlers (:mod:`flagsched.admin.verbs`) and the service layer are imported
only when one of these verbs runs, so ``flagsched worker`` starts no slower."""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flagsched.runtime.settings import Settings

Run = Callable[[argparse.Namespace, Settings], int]
Wrap = Callable[[Run], Run]

#: The list sort orders (as flagsched.admin.service.schedules_read.SORTS).
SORTS = ("scheduled_at", "-scheduled_at", "created_at", "-created_at", "id", "-id")
#: Where ``flagsched admin openapi`` writes, relative to the repository root.
OPENAPI_FILE = Path("docs/admin-api.openapi.json")


def _lazy(name: str, *, guarded: bool = True) -> Run:
    def run(args: argparse.Namespace, settings: Settings) -> int:
        verbs = importlib.import_module("flagsched.admin.verbs")
        handler: Run = getattr(verbs, name)
        return (verbs.guard(handler) if guarded else handler)(args, settings)

    return run


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add(sub: Any, name: str, run: str, wrap: Wrap, help_text: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    p.set_defaults(handler=wrap(_lazy(run)))
    _common(p)
    return p


def _schedule_fields(p: argparse.ArgumentParser, *, create: bool) -> None:
    p.add_argument(
        "--updates", type=_json_arg, required=create, help="JSON, e.g. '{\"enabled\": true}'"
    )
    p.add_argument("--at", required=create, help="RFC 3339 time with an offset; past means now")
    p.add_argument(
        "--priority", choices=["normal", "critical"], default="normal" if create else None
    )
    p.add_argument("--retry-policy", type=_json_arg, help="JSON retry policy (docs/admin-api.md)")
    p.add_argument("--max-retries", type=int)


def register(sub: Any, wrap: Wrap) -> None:
    """Add the admin verbs to the ``flagsched`` command; ``wrap`` resolves the services."""
    admin = sub.add_parser("admin", help="the admin HTTP API", description="the admin HTTP API")
    a_sub = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    serve = a_sub.add_parser(
        "serve", help="serve the admin API on FLAGSCHED_ADMIN_ADDR:FLAGSCHED_ADMIN_PORT"
    )
    serve.set_defaults(handler=wrap(_lazy("_cmd_serve", guarded=False)))
    openapi = a_sub.add_parser("openapi", help="write (or --check) the OpenAPI document")
    openapi.add_argument("--out", type=Path, default=OPENAPI_FILE)
    openapi.add_argument("--check", action="store_true", help="fail if the file is stale")
    openapi.set_defaults(handler=_lazy("_cmd_openapi", guarded=False))
    token = a_sub.add_parser("token", help="static API tokens")
    t_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = t_sub.add_parser(
        "create", help="add a token to FLAGSCHED_ADMIN_TOKENS_FILE; prints it once"
    )
    create.add_argument("--role", required=True, choices=["viewer", "operator", "admin"])
    create.add_argument("--name", help="who or what uses it (the audit trail's actor)")
    create.add_argument("--prefix", action="append", help="limit to flag keys with this prefix")
    create.add_argument("--file", type=Path, help="default: FLAGSCHED_ADMIN_TOKENS_FILE")
    create.set_defaults(handler=_lazy("_cmd_token", guarded=False))

    sched = sub.add_parser("schedules", help="scheduled flag changes", description="schedules")
    s_sub = sched.add_subparsers(dest="schedules_command", required=True, metavar="ACTION")
    p = _add(s_sub, "create", "_cmd_create", wrap, "create a schedule")
    p.add_argument("flag")
    _schedule_fields(p, create=True)
    p = _add(s_sub, "list", "_cmd_list", wrap, "list schedules")
    p.add_argument("--status", action="append", help="repeatable; e.g. retrying")
    p.add_argument("--flag")
    p.add_argument("--prefix")
    p.add_argument("--priority", choices=["normal", "critical"])
    p.add_argument("--error-class")
    p.add_argument("--sort", choices=SORTS, default="scheduled_at")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cursor")
    for name, run, text in (
        ("show", "_cmd_show", "a schedule, its attempts and its plan"),
        ("cancel", "_cmd_cancel", "cancel a pending, dispatched or retrying schedule"),
        ("retry", "_cmd_retry", "run a retrying schedule now, or re-open a dead one"),
    ):
        p = _add(s_sub, name, run, wrap, text)
        p.add_argument("flag")
        p.add_argument("id", type=int)
    p = _add(s_sub, "edit", "_cmd_edit", wrap, "edit a schedule not yet applied")
    p.add_argument("flag")
    p.add_argument("id", type=int)
    _schedule_fields(p, create=False)
    p = _add(s_sub, "preview", "_cmd_preview", wrap, "the retry timeline of a schedule or a policy")
    p.add_argument("flag", nargs="?")
    p.add_argument("id", type=int, nargs="?")
    p.add_argument("--retry-policy", type=_json_arg, help="preview this policy instead")

    dl = sub.add_parser("dead-letters", help="dead schedules", description="dead letters")
    d_sub = dl.add_subparsers(dest="dl_command", required=True, metavar="ACTION")
    for name, run, text in (
        ("list", "_cmd_dl_list", "dead schedules with their last error"),
        ("redrive", "_cmd_redrive", "re-arm dead schedules (a dry run unless --no-dry-run)"),
    ):
        p = _add(d_sub, name, run, wrap, text)
        p.add_argument("--flag")
        p.add_argument("--prefix")
        p.add_argument("--error-class")
        p.add_argument("--reason", choices=["exhausted", "permanent"])
        p.add_argument("--limit", type=int, default=50 if name == "list" else None)
        if name == "list":
            p.add_argument("--cursor")
        else:
            p.add_argument("--ids", type=int, nargs="+")
            p.add_argument("--dry-run", action=argparse.BooleanOptionalAction, default=True)
            p.add_argument("--rate", type=float, help="schedules per second")

    rd = sub.add_parser("redrives", help="redrive jobs", description="redrive jobs")
    r_sub = rd.add_subparsers(dest="rd_command", required=True, metavar="ACTION")
    p = _add(r_sub, "show", "_cmd_redrive_show", wrap, "a redrive job's progress")
    p.add_argument("id", type=int)
