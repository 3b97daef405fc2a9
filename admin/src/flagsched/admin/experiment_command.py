"""``flagsched experiment start NAME --arms JSON`` and ``flagsched experiment stop NAME``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from flagsched.admin.experiments import ExperimentError, start_experiment, stop_experiment
from flagsched.runtime.errors import ConfigError
from flagsched.runtime.settings import Settings
from flagsched.schemas.retry.experiments import Experiment


def _arms(text: str) -> object:
    # "@path" reads the JSON from a file, like curl's --data @file.
    raw = Path(text[1:]).read_text() if text.startswith("@") else text
    return json.loads(raw)


def cmd_experiment(args: argparse.Namespace, settings: Settings) -> int:
    """Start or stop an experiment in the database ``settings`` name."""
    from flagsched.runtime.db.connect import connect

    with connect(
        settings.require_database_url(), timeout_s=settings.connect_timeout_s, autocommit=True
    ) as conn:
        if args.experiment_command == "stop":
            stopped = stop_experiment(conn, args.name)
            print(f"experiment {args.name} stopped" if stopped else f"{args.name} is not running")
            return 0 if stopped else 1
        try:
            experiment = Experiment.model_validate({"name": args.name, "arms": _arms(args.arms)})
            start_experiment(conn, experiment, settings.default_retry_policy())
        except (ValidationError, ExperimentError, json.JSONDecodeError, OSError) as exc:
            raise ConfigError(f"experiment {args.name}: {exc}") from exc
    arms = ", ".join(f"{a.name} (weight {a.weight})" for a in experiment.arms)
    print(f"experiment {experiment.name} running: {arms}")
    return 0


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    handler: Callable[[argparse.Namespace, Settings], int],
) -> None:
    """Add ``experiment start|stop``."""
    text = "backoff experiments: arms (retry policies) with weights; see README"
    parser = subparsers.add_parser("experiment", help=text, description=text)
    sub = parser.add_subparsers(dest="experiment_command", required=True, metavar="ACTION")
    start = sub.add_parser(
        "start", help="start one (new schedules without an explicit policy join it)"
    )
    start.add_argument("name")
    start.add_argument(
        "--arms",
        required=True,
        metavar="JSON",
        help='the arms, e.g. \'[{"name": "a", "weight": 1, "policy": {"base_s": 1}}, ...]\''
        " or @file.json",
    )
    stop = sub.add_parser("stop", help="stop it (its schedules keep their arms)")
    stop.add_argument("name")
    parser.set_defaults(handler=handler)
