"""``tierwise canary status | promote | rollback --config X``: the canary's rollout, for people.

It reads and writes the rollout's state in the config's state store, as the gateways do, so with a
shared Redis every replica follows a promotion or a rollback within seconds. ``status`` prints each
arm's counts and the guard's checks (``--json`` for machines).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from .errors import ConfigError


def add_canary_parser(commands: Any) -> None:
    canary = commands.add_parser("canary", help="a canary policy's rollout: status, promote, rollback")
    canary.add_argument("action", choices=("status", "promote", "rollback"))
    canary.add_argument("--config", required=True)
    canary.add_argument("--json", action="store_true", help="status as JSON")
    canary.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from .canary import PROMOTED, ROLLED_BACK
    from .ledger import NullLedger
    from .router import Router

    router = Router.from_config(args.config, ledger=NullLedger())
    canary = router.canary
    if canary is None:
        raise ConfigError(f"{args.config}: policy.canary is not configured")
    if args.action != "status" and router.config.storage.state.startswith("memory"):
        raise ConfigError(
            "storage.state is memory://: no gateway would see this; promote and rollback need a shared "
            "state store (redis://…)"
        )

    async def act() -> dict[str, Any]:
        try:
            if args.action == "promote":
                await canary.set_flag(PROMOTED, why="promoted by tierwise canary promote")
            elif args.action == "rollback":
                await canary.set_flag(ROLLED_BACK, why="rolled back by tierwise canary rollback")
            return await canary.status()
        finally:
            await router.state.close()

    status = asyncio.run(act())
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"canary {status['canary_version']} beside stable {status['stable_version']}: {status['state']}")
    print(
        f"share {status['share']:.0%}, guard from {status['min_samples']} canary requests "
        f"({status['min_labels']} labels per arm for the judge and feedback checks)"
    )
    print(f"  {'arm':<7} {'requests':>8} {'$/request':>10} {'escalated':>9} {'errors':>7} "
          f"{'judged':>6} {'won':>6} {'lost':>6} {'feedback':>8} {'mean':>5}")  # fmt: skip
    for arm, f in status["arms"].items():
        print(
            f"  {arm:<7} {int(f['requests']):>8} {_num(f['cost_per_request_usd'], '.6f'):>10} "
            f"{_num(f['escalation_rate'], '.1%'):>9} {_num(f['error_rate'], '.1%'):>7} "
            f"{int(f['judged']):>6} {_num(f['judge_win_rate'], '.0%'):>6} "
            f"{_num(f['judge_loss_rate'], '.0%'):>6} "
            f"{int(f['feedback']):>8} {_num(f['feedback_mean'], '.2f'):>5}"
        )
    if not status["checks"]:
        print(f"  guard   waiting: fewer than {status['min_samples']} canary requests")
    for check in status["checks"]:
        verdict = "BREACHED" if check["breached"] else "ok"
        print(f"  guard   {_check_line(check)}: {verdict}")
    return 0


def _num(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _check_line(check: dict[str, Any]) -> str:
    if check["metric"] == "feedback":
        return (
            f"feedback: canary mean {check['canary']:.3f} vs stable {check['stable']:.3f}, lower by "
            f"≥ {check['lower_limit']:.3f} (bound {check['bound']:.3f})"
        )
    return (
        f"{check['metric']}: canary {check['canary']:.1%} vs stable {check['stable']:.1%}, difference "
        f"≥ {check['lower_limit']:+.1%} (bound {check['bound']:+.1%})"
    )
