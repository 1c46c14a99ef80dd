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
    print(f"share {status['share']:.0%}, guard from {status['min_samples']} canary requests")
    for arm, counts in status["counts"].items():
        n = counts["requests"]
        rates = ", ".join(f"{m} {counts[m] / n:.1%}" for m in ("escalated", "errors")) if n else "no requests"
        print(f"  {arm:<7} {int(n):>7} requests: {rates}")
    for check in status["checks"]:
        verdict = "BREACHED" if check["breached"] else "ok"
        print(
            f"  guard   {check['metric']}: canary {check['canary_rate']:.1%} vs stable "
            f"{check['stable_rate']:.1%}, difference ≥ {check['lower_limit']:+.1%} "
            f"(bound {check['bound']:+.1%}): {verdict}"
        )
    return 0
