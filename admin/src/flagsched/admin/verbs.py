"""The handlers of the admin CLI verbs (registered by :mod:`flagsched.admin.cli`). They
call the service layer directly (not the HTTP API) as the local admin, and drain the
outbox before exiting."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kafka.errors import KafkaError
from pydantic import BaseModel, ValidationError

from flagsched.admin import render
from flagsched.admin.service import outbox, redrives
from flagsched.admin.service.access import local_actor
from flagsched.admin.service.core import AdminService
from flagsched.admin.service.env import Env
from flagsched.admin.service.errors import AdminError
from flagsched.admin.service.models import (
    DeadLetterFilter,
    PolicyPreviewRequest,
    Redrive,
    RedriveRequest,
    ScheduleCreate,
    ScheduleEdit,
)
from flagsched.admin.service.mutation import Outcome
from flagsched.admin.service.schedules_read import ScheduleFilter
from flagsched.admin.service.tokens import create_token
from flagsched.admin.settings import AdminSettings, load_admin_settings
from flagsched.runtime.clients import make_producer
from flagsched.runtime.db.connect import connect
from flagsched.runtime.errors import ServiceUnavailable
from flagsched.runtime.settings import Settings

log = logging.getLogger(__name__)

Run = Callable[[argparse.Namespace, Settings], int]


def _print(
    args: argparse.Namespace, model: BaseModel | dict[str, Any], text: Callable[[], str]
) -> None:
    if args.json:
        data = model.model_dump(mode="json") if isinstance(model, BaseModel) else model
        print(json.dumps(data, indent=2))
    else:
        print(text())


@contextmanager
def _service(settings: Settings) -> Iterator[AdminService]:
    pool = AdminService.make_pool(
        settings.require_database_url(), max_size=2, timeout_s=settings.connect_timeout_s
    )
    pool.open(wait=True, timeout=settings.connect_timeout_s)
    try:
        yield AdminService(Env(settings, load_admin_settings()), pool)
    finally:
        pool.close()


def _drain(settings: Settings) -> None:
    """Publish what the action queued; if Kafka is down, the admin server sends it later."""
    try:
        producer = make_producer(settings)
    except ServiceUnavailable as exc:
        print(f"warning: queued in the outbox, not yet published: {exc}", file=sys.stderr)
        return
    try:
        with connect(settings.require_database_url(), autocommit=True) as conn:
            outbox.drain_all(conn, producer, timeout_s=settings.connect_timeout_s)
    except KafkaError as exc:
        print(f"warning: queued in the outbox, not yet published: {exc}", file=sys.stderr)
    finally:
        producer.close(timeout=5)


def _outcome(
    args: argparse.Namespace,
    settings: Settings,
    outcome: Outcome,
    text: Callable[[dict[str, Any]], str],
) -> int:
    _drain(settings)
    if args.json:
        print(json.dumps(outcome.body, indent=2))
    else:
        print(text(outcome.body))
    return 0


def _actor() -> Any:
    return local_actor(getpass.getuser())


def _cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    body = ScheduleCreate.model_validate(
        {
            "updates": args.updates,
            "scheduled_at": args.at,
            "priority": args.priority,
            "retry_policy": args.retry_policy,
            "max_retries": args.max_retries,
        }
    )
    with _service(settings) as svc:
        out = svc.create(_actor(), args.flag, body)

    def text(b: dict[str, Any]) -> str:
        s = b["schedule"]
        lines = [f"created schedule {s['id']} of {s['flag_key']} at {s['scheduled_at']}"]
        if b["scheduled_in_past"]:
            lines.append(f"  {b['requested_scheduled_at']} had passed: it runs now")
        lines += [
            f"  conflicts with schedule {c['schedule_id']} ({c['status']},"
            f" {c['scheduled_at']}): {', '.join(c['fields'])}"
            for c in b["conflicts"]
        ]
        return "\n".join(lines)

    return _outcome(args, settings, out, text)


def _cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    f = ScheduleFilter(
        status=args.status or [],
        flag_key=args.flag,
        flag_prefix=args.prefix,
        priority=args.priority,
        error_class=args.error_class,
    )
    with _service(settings) as svc:
        page = svc.list(_actor(), f, sort=args.sort, limit=args.limit, cursor=args.cursor)
    _print(
        args,
        page,
        lambda: (
            render.schedules(page.items)
            + (f"\nnext: --cursor {page.next_cursor}" if page.next_cursor else "")
        ),
    )
    return 0


def _cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    with _service(settings) as svc:
        d = svc.show(_actor(), args.flag, args.id)
    _print(args, d, lambda: render.detail(d))
    return 0


def _cmd_edit(args: argparse.Namespace, settings: Settings) -> int:
    given = {
        k: v
        for k, v in (
            ("updates", args.updates),
            ("scheduled_at", args.at),
            ("priority", args.priority),
            ("retry_policy", args.retry_policy),
            ("max_retries", args.max_retries),
        )
        if v is not None
    }
    body = ScheduleEdit.model_validate(given)
    with _service(settings) as svc:
        out = svc.edit(_actor(), args.flag, args.id, body)
    return _outcome(
        args, settings, out, lambda b: f"schedule {b['id']}: {b['status']}, at {b['scheduled_at']}"
    )


def _cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    with _service(settings) as svc:
        out = svc.cancel(_actor(), args.flag, args.id)
    return _outcome(
        args,
        settings,
        out,
        lambda b: f"schedule {b['schedule']['id']} cancelled (attempt {b['attempt']})",
    )


def _cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    with _service(settings) as svc:
        out = svc.retry(_actor(), args.flag, args.id)

    def text(b: dict[str, Any]) -> str:
        what = "runs now" if b["action"] == "run_now" else "re-opened"
        extra = (
            "; newer changes set every field: expect superseded" if b["expected_superseded"] else ""
        )
        return (
            f"schedule {b['schedule']['id']} {what}: attempt {b['attempt']}"
            f" (max_retries {b['max_retries']}){extra}"
        )

    return _outcome(args, settings, out, text)


def _cmd_preview(args: argparse.Namespace, settings: Settings) -> int:
    with _service(settings) as svc:
        if args.id is not None:
            p = svc.preview(_actor(), args.flag, args.id)
        else:
            p = svc.preview_policy(
                PolicyPreviewRequest.model_validate({"retry_policy": args.retry_policy})
            )
    _print(args, p, lambda: render.preview(p))
    return 0


def _dl_filter(args: argparse.Namespace) -> DeadLetterFilter:
    return DeadLetterFilter(
        flag_key=args.flag,
        flag_prefix=args.prefix,
        error_class=args.error_class,
        reason=args.reason,
    )


def _cmd_dl_list(args: argparse.Namespace, settings: Settings) -> int:
    with _service(settings) as svc:
        page = svc.dead_letters(_actor(), _dl_filter(args), limit=args.limit, cursor=args.cursor)
    _print(args, page, lambda: render.dead_letters(page.items))
    return 0


def _cmd_redrive(args: argparse.Namespace, settings: Settings) -> int:
    req = RedriveRequest(
        filter=_dl_filter(args),
        schedule_ids=args.ids or None,
        dry_run=args.dry_run,
        limit=args.limit,
        rate_per_s=args.rate,
    )
    with _service(settings) as svc:
        if req.dry_run:
            p = svc.redrive_plan(_actor(), req)
            _print(args, p, lambda: render.redrive_plan(p))
            return 0
        out = svc.redrive(_actor(), req)
        job = Redrive.model_validate(out.body)
        if not args.json:
            print(f"started redrive {job.id} of {job.total} schedule(s) at {job.rate_per_s:g}/s")
        # No server may be running: work the job through here, at its rate.
        with svc.connection() as conn:
            redrives.run_until_idle(conn, svc.env, threading.Event(), lambda: _drain(settings))
        job = svc.get_redrive(job.id)
    _print(args, job, lambda: render.redrive(job))
    return 0


def _cmd_redrive_show(args: argparse.Namespace, settings: Settings) -> int:
    with _service(settings) as svc:
        job = svc.get_redrive(args.id)
    _print(args, job, lambda: render.redrive(job))
    return 0


def _cmd_serve(_args: argparse.Namespace, settings: Settings) -> int:
    from flagsched.admin.api.server import AdminServer

    server = AdminServer(settings, load_admin_settings())
    print(
        f"flagsched admin API on http://{server.admin.admin_addr}:{server.admin.admin_port}",
        flush=True,
    )
    server.run()
    return 0


def _cmd_openapi(args: argparse.Namespace, _settings: Settings) -> int:
    from flagsched.admin.api.app import openapi_document, render_openapi

    text = render_openapi(openapi_document())
    path: Path = args.out
    if args.check:
        if not path.exists() or path.read_text("utf-8") != text:
            print(f"out of date: {path} (run `flagsched admin openapi`)")
            return 1
        print(f"{path} up to date")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    print(f"wrote {path}")
    return 0


def _cmd_token(args: argparse.Namespace, _settings: Settings) -> int:
    admin: AdminSettings = load_admin_settings()
    path: Path | None = args.file or admin.admin_tokens_file
    if path is None:
        print("flagsched: set FLAGSCHED_ADMIN_TOKENS_FILE or pass --file", file=sys.stderr)
        return 2
    token = create_token(path, args.role, name=args.name or "", prefixes=tuple(args.prefix or ()))
    print(token)
    print(f"(shown once; stored hashed in {path})", file=sys.stderr)
    return 0


def guard(run: Run) -> Run:
    """Turn bad input and refused actions into a message and exit code 2 / 1."""

    def wrapped(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return run(args, settings)
        except ValidationError as exc:
            for e in exc.errors():
                print(
                    f"flagsched: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}", file=sys.stderr
                )
            return 2
        except AdminError as exc:
            print(f"flagsched: {exc.detail}", file=sys.stderr)
            return 1

    return wrapped
