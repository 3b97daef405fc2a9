"""``python -m bench.experiment_report``: how long an experiment report takes to compute.

Times :func:`flagsched.admin.experiments.build_report` (the statistics behind
``GET /api/admin/experiments/{name}/report`` and ``flagsched stats --experiment``;
the database read before it is not included) on a synthetic two-arm experiment of N
schedules: 97 % applied, 2 % dead, 1 % still retrying, 1 to 8 attempts (or
``--max-attempts N``), and a log-normal time from first failure to applied for the
applied schedules that failed. No services are needed. ``--profile`` prints the top
of a cProfile of one report.

Example: ``.venv/bin/python -m bench.experiment_report --schedules 1000 10000``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import statistics
import time

from flagsched.admin.experiments import Outcome, bootstrap_draws, build_report
from flagsched.schemas.retry.experiments import Experiment

EXPERIMENT = Experiment.model_validate(
    {
        "name": "bench",
        "arms": [
            {"name": "a", "weight": 1, "policy": {}},
            {"name": "b", "weight": 1, "policy": {"base_s": 1.0}},
        ],
    }
)


def outcomes(schedules: int, seed: int = 0, max_attempts: int = 8) -> list[Outcome]:
    """``schedules`` seeded outcomes, alternating between the two arms."""
    rng = random.Random(seed)
    out = []
    for i in range(schedules):
        arm = "ab"[i % 2]
        roll = rng.random()
        if roll < 0.01:
            out.append(Outcome(arm, "retrying", None, None))
        elif roll < 0.03:
            out.append(Outcome(arm, "dead", max_attempts, None))
        else:
            # Exponential: 1 + floor(E) attempts, or spread evenly for wide experiments.
            if max_attempts <= 8:
                attempts = min(max_attempts, 1 + int(rng.expovariate(1.0)))
            else:
                attempts = rng.randint(1, max_attempts)
            recovery = rng.lognormvariate(1.5, 0.8) if attempts > 1 else None
            out.append(Outcome(arm, "applied", attempts, recovery))
    return out


def time_report(schedules: int, resamples: int, repeats: int, max_attempts: int = 8) -> list[float]:
    """Seconds per report, ``repeats`` times (seeds 0..)."""
    data = outcomes(schedules, max_attempts=max_attempts)
    took = []
    for seed in range(repeats):
        t0 = time.perf_counter()
        build_report(EXPERIMENT, data, resamples=resamples, seed=seed)
        took.append(time.perf_counter() - t0)
    return took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.experiment_report", description=__doc__)
    parser.add_argument("--schedules", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--resamples", type=int, nargs="+", default=[1000])
    parser.add_argument("--repeats", type=int, default=3, help="reports timed per size")
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=8,
        help="attempts of applied schedules: 1 + an exponential up to 8 (default), or"
        " spread evenly over 1..N above 8 (that many distinct values per arm)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile one report per size")
    args = parser.parse_args(argv)
    print(f"{'schedules':>10} {'resamples':>10} {'draws':>10} {'median s':>10} {'max s':>10}")
    for n in args.schedules:
        for resamples in args.resamples:
            took = time_report(n, resamples, args.repeats, args.max_attempts)
            data = outcomes(n, max_attempts=args.max_attempts)
            draws = bootstrap_draws([[o for o in data if o.arm == a] for a in "ab"], resamples)
            print(
                f"{n:>10} {resamples:>10} {draws:>10} {statistics.median(took):>10.3f}"
                f" {max(took):>10.3f}"
            )
            if args.profile:
                data = outcomes(n, max_attempts=args.max_attempts)
                profile = cProfile.Profile()
                profile.runcall(build_report, EXPERIMENT, data, resamples=resamples)
                pstats.Stats(profile).sort_stats("cumulative").print_stats(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
