"""Does the circuit breaker keep a noisy primary in use, and still eject a dead one? One command:

    python bench/breaker.py [--rates 20,2] [--requests 3000] [--seed 7] [--sweep] [--json out.json]

A fleet of two models, each on a fake OpenAI-compatible upstream on 127.0.0.1 (``tests/fakes/upstream.py``):
``primary`` (the policy's default) and ``fallback`` (its fallback, itself failing ``--fallback-errors`` of
its calls at random, so that "ejected: tried last, not never" is exercised). Requests go through an
in-process ``Router`` with the memory state and ``retry.attempts: 2`` (backoff 0: the breaker is
measured, not the backoff). Each breaker setting runs each scenario at each rate:

  * ``30% errors`` / ``60% errors``: the primary answers a seeded random share of its calls with a 500;
  * ``no errors``;
  * ``outages``: six hard outages of the primary (every call a 500) of 37, 53, 71, 97, 131 and 293 s,
    each after 60 s of health, and 60 s of health at the end. The lengths are no multiples of the
    ejection lengths tried, so that recovery times sample different points of an ejection.

Time is simulated: request i arrives at i / rate seconds on a clock that both the breaker and the state
read, and requests run one after another. So the figures do not depend on this machine's speed or load,
and a run with the same options prints the same digits. Reported per setting and scenario: the share of
requests the primary answered, the requests that failed to the client, the extra upstream attempts (calls
beyond one per request: retries and fallbacks); for the outages, the mean time from an outage's start to
the first request that found the primary ejected (eject: the state store says it is cooling, so the
fallback is tried first), the mean and the longest time from its end to the first request the primary
answered while not ejected (recover), and the share of requests during outages that still tried the dead
primary first (probed). ``--sweep`` also runs a grid of settings, one knob at a time: the figures behind
the default.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.upstream import FakeUpstream  # noqa: E402

from tierwise.config import parse_config  # noqa: E402
from tierwise.dispatch import Dispatcher  # noqa: E402
from tierwise.errors import ChainExhausted  # noqa: E402
from tierwise.router import Router  # noqa: E402
from tierwise.state import MemoryState  # noqa: E402

BODY = {
    "model": "auto",
    "messages": [{"role": "user", "content": "Classify the sentiment of: 'fine, I guess'"}],
}
CONSECUTIVE = {"mode": "consecutive", "failures": 3, "seconds": 30}  # the breaker before the ratio mode
OLD, NEW = "consecutive 3 / 30 s", "ratio (default)"
OUTAGES_S = (37, 53, 71, 97, 131, 293)
HEALTHY_S = 60


@dataclass(frozen=True)
class Scenario:
    name: str
    seconds: float  # simulated length: requests = seconds × rate
    error_rate: float = 0.0  # the primary's random 500s outside outages
    outages: tuple[tuple[float, float], ...] = ()  # simulated seconds: the primary is down from, until


@dataclass
class Result:
    setting: str
    scenario: str
    rate: float
    requests: int = 0
    primary: int = 0  # answered by the primary
    failed: int = 0  # ChainExhausted: failed to the client
    attempts: int = 0  # upstream calls, every model
    during: int = 0  # requests during outages
    probed: int = 0  # ... that tried the dead primary first
    eject_s: list[float | None] = field(default_factory=list)  # per outage; None: never ejected
    recover_s: list[float | None] = field(default_factory=list)  # per outage; None: not back in time

    @property
    def share(self) -> float:
        return self.primary / self.requests

    @property
    def extra(self) -> int:
        return self.attempts - self.requests


class Clock:
    """Simulated monotonic seconds, set by the load loop."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def scenarios(requests: int, rate: float) -> list[Scenario]:
    outages, t = [], 0.0
    for length in OUTAGES_S:
        t += HEALTHY_S
        outages.append((t, t + length))
        t += length
    return [
        Scenario("30% errors", requests / rate, error_rate=0.3),
        Scenario("60% errors", requests / rate, error_rate=0.6),
        Scenario("no errors", requests / rate),
        Scenario("outages", t + HEALTHY_S, outages=tuple(outages)),
    ]


def fleet(urls: dict[str, str], cooldown: dict[str, Any]) -> dict[str, Any]:
    def provider(url: str) -> dict[str, Any]:
        return {"kind": "openai", "base_url": url, "timeouts": {"connect": 1, "first_byte": 5, "total": 5}}

    def model(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "provider": name,
            "upstream": f"{name}-model",
            "tier": "review",
            "context_window": 16_000,
            "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
        }

    return {
        "providers": {name: provider(url) for name, url in urls.items()},
        "models": [model("primary"), model("fallback")],
        "policy": {
            "rules": [],
            "default": {"model": "primary", "fallbacks": ["fallback"]},
            "retry": {"attempts": 2, "backoff_s": 0},
            "cooldown": cooldown,
        },
        "storage": {"ledger": "none"},
    }


async def run(
    setting: str,
    cooldown: dict[str, Any],
    scenario: Scenario,
    *,
    rate: float,
    seed: int,
    fallback_errors: float,
    ups: dict[str, FakeUpstream],
) -> Result:
    """One setting through one scenario at one rate: a fresh Router, state and clock."""
    primary, fallback = ups["primary"], ups["fallback"]
    for up in ups.values():
        up.requests.clear()
        up.headers.clear()
    primary.fault("random_500", rate=scenario.error_rate, seed=seed)
    fallback.fault("random_500", rate=fallback_errors, seed=seed + 1)
    clock = Clock()
    config = parse_config(fleet({name: up.url for name, up in ups.items()}, cooldown))
    state = MemoryState(clock=clock)
    router = Router(config, state=state)
    # The dispatcher the Router builds, on the simulated clock.
    router.dispatcher = Dispatcher(config, router.providers, state, rng=random.Random(seed), clock=clock)
    result = Result(setting, scenario.name, rate)
    outages = list(scenario.outages)
    down: tuple[float, float] | None = None  # the outage in progress
    after: float | None = None  # the end of the last outage, until the primary is back
    async with router:
        for i in range(round(scenario.seconds * rate)):
            clock.now = t = i / rate
            if down is None and outages and t >= outages[0][0]:
                down = outages.pop(0)
                primary.fault("500")
                result.eject_s.append(None)
                if after is not None:  # not back before the next outage began
                    result.recover_s.append(None)
                    after = None
            elif down is not None and t >= down[1]:
                primary.fault(None)
                after, down = down[1], None
            # What the dispatcher's plan will see: an ejected primary is tried after the fallback.
            ejected = bool(await state.cooling(["primary"]))
            try:
                answered = (await router.route(dict(BODY))).model
            except ChainExhausted:
                answered = None
                result.failed += 1
            result.requests += 1
            result.primary += answered == "primary"
            if down is not None:
                result.during += 1
                result.probed += not ejected
                if ejected and result.eject_s[-1] is None:
                    result.eject_s[-1] = round(t - down[0], 3)
            elif after is not None and not ejected and answered == "primary":
                result.recover_s.append(round(t - after, 3))
                after = None
    if after is not None:
        result.recover_s.append(None)
    result.attempts = sum(len(up.requests) for up in ups.values())
    return result


def settings(sweep: bool) -> dict[str, dict[str, Any]]:
    """Breaker settings by name: the old default, the new default, and (``sweep``) a grid: one knob at a
    time around the default, written out in full so the grid does not move when the default does."""
    chosen: dict[str, dict[str, Any]] = {OLD: CONSECUTIVE, NEW: {}}
    if not sweep:
        return chosen
    base = {
        "failure_ratio": 0.6,
        "min_calls": 20,
        "window_s": 10,
        "seconds": 10,
        "max_seconds": 10,
        "failures": 3,
    }
    grid = {
        "consecutive 5 / 10 s": {"mode": "consecutive", "failures": 5, "seconds": 10},
        "consecutive 10 / 10 s": {"mode": "consecutive", "failures": 10, "seconds": 10},
    }
    variants: list[dict[str, Any]] = [{}]
    variants += [{"failure_ratio": r} for r in (0.3, 0.5, 0.75)]
    variants += [{"min_calls": n} for n in (10, 30, 50)]
    variants += [{"window_s": w} for w in (5, 20, 30)]
    variants += [{"failures": n} for n in (1, 5)]
    ejections = ((5, 5), (10, 30), (10, 300), (30, 30), (30, 300))
    variants += [{"seconds": s, "max_seconds": m} for s, m in ejections]
    for change in variants:
        c = base | change
        name = (
            f"ratio {c['failure_ratio']:g} min {c['min_calls']} win {c['window_s']:g} "
            f"eject {c['seconds']:g}-{c['max_seconds']:g} probe {c['failures']}"
        )
        grid[name] = c
    return chosen | grid


def mean(values: list[float | None]) -> float | None:
    """The mean, or None if any value is None (an outage never ejected, or never recovered from)."""
    if not values or any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None) / len(values)


def peak(values: list[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return max(v for v in values if v is not None)


def fmt(value: float | None, unit: str = "") -> str:
    return "never" if value is None else f"{value:.1f}{unit}"


def table(results: list[Result]) -> list[str]:
    """Every run of the old and the new default, one line each."""
    lines = [
        f"{'setting':<21} {'scenario':<10} {'req/s':>5} {'requests':>8} {'primary':>7} {'failed':>6} "
        f"{'extra attempts':>16} {'eject':>6} {'recover mean/max':>16} {'probed':>6}"
    ]
    for r in results:
        line = (
            f"{r.setting:<21} {r.scenario:<10} {r.rate:>5g} {r.requests:>8} {r.share:>7.1%} {r.failed:>6} "
            f"{r.extra:>6} ({r.extra / r.requests:.2f}/req)"
        )
        if r.scenario == "outages":
            recover = f"{fmt(mean(r.recover_s), ' s')} / {fmt(peak(r.recover_s), ' s')}"
            line += f" {fmt(mean(r.eject_s), ' s'):>6} {recover:>16} {r.probed / r.during:>6.1%}"
        lines.append(line.rstrip())
    return lines


def summary(results: list[Result], rates: list[float]) -> list[str]:
    """One line per setting: primary share under noise; eject, recover and probing in the outages."""
    by = {(r.setting, r.scenario, r.rate): r for r in results}
    names = list(dict.fromkeys(r.setting for r in results))
    cols = f"{'30%':>6} {'60%':>6} {'eject':>5} {'rec':>5} {'max':>5} {'probed':>6}"
    head = f"{'':<44}" + "".join(f" | {f'{rate:g} req/s':<{len(cols)}}" for rate in rates)
    lines = [head, f"{'setting':<44}" + f" | {cols}" * len(rates)]
    for name in names:
        line = f"{name:<44}"
        for rate in rates:
            low, high, out = (by[(name, s, rate)] for s in ("30% errors", "60% errors", "outages"))
            line += (
                f" | {low.share:>6.1%} {high.share:>6.1%} {fmt(mean(out.eject_s)):>5} "
                f"{fmt(mean(out.recover_s)):>5} {fmt(peak(out.recover_s)):>5} {out.probed / out.during:>6.1%}"
            )
        lines.append(line)
    return lines


async def measure(args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    async with (
        FakeUpstream(reply="primary answer") as primary,
        FakeUpstream(reply="fallback answer") as fallback,
    ):
        ups = {"primary": primary, "fallback": fallback}
        for setting, cooldown in settings(args.sweep).items():
            for rate in args.rates:
                for scenario in scenarios(args.requests, rate):
                    results.append(
                        await run(
                            setting,
                            cooldown,
                            scenario,
                            rate=rate,
                            seed=args.seed,
                            fallback_errors=args.fallback_errors,
                            ups=ups,
                        )
                    )
    return results


def run_loop(coro: Coroutine[Any, Any, list[Result]]) -> list[Result]:
    try:
        import uvloop  # optional: only makes the run shorter
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rates", type=lambda s: [float(x) for x in s.split(",")], default=[20.0, 2.0],
        help="simulated requests per second, comma-separated (default 20,2)",
    )  # fmt: skip
    parser.add_argument("--requests", type=int, default=3000, help="requests of each noise run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fallback-errors", type=float, default=0.05, help="the fallback's random 500s")
    parser.add_argument("--sweep", action="store_true", help="also run a grid of settings")
    parser.add_argument("--json", help="also write every result here")
    args = parser.parse_args()
    logging.getLogger("tierwise.dispatch").setLevel(logging.ERROR)  # one warning per ejection otherwise
    started = time.perf_counter()
    results = run_loop(measure(args))
    print(
        f"primary + fallback on 127.0.0.1; retry.attempts 2; the fallback fails {args.fallback_errors:.0%} "
        f"of its calls; seed {args.seed}; simulated clock"
    )
    print("\n".join(table([r for r in results if r.setting in (OLD, NEW)])))
    if args.sweep:
        print(
            "\nThe sweep: primary share at 30% and 60% errors; over the outages: mean eject s, mean and max"
            "\nrecover s, share of outage requests that tried the dead primary first"
        )
        print("\n".join(summary(results, args.rates)))
    by = {(r.setting, r.scenario, r.rate): r for r in results}
    print()
    for rate in args.rates:
        old, new = by[(OLD, "30% errors", rate)], by[(NEW, "30% errors", rate)]
        out_old, out_new = by[(OLD, "outages", rate)], by[(NEW, "outages", rate)]
        print(
            f"{rate:g} req/s: primary share at 30% errors, ratio ÷ consecutive = {new.share:.1%} ÷ "
            f"{old.share:.1%} = {new.share / max(old.share, 1e-9):.1f}×; outages: eject after "
            f"{fmt(mean(out_new.eject_s), ' s')} vs {fmt(mean(out_old.eject_s), ' s')}, recover after "
            f"{fmt(mean(out_new.recover_s), ' s')} vs {fmt(mean(out_old.recover_s), ' s')} (means)"
        )
    print(f"({time.perf_counter() - started:.0f} s)")
    if args.json:
        Path(args.json).write_text(
            json.dumps([asdict(r) | {"share": r.share, "extra": r.extra} for r in results], indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
