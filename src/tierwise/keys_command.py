"""``tierwise keys``: create, list, show and revoke virtual keys in the state store the config names,
and hash a secret for the config's ``keys:``. Talks to the state store directly, not to a gateway."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when a command runs: `tierwise --help` stays fast
    from .access import Keys


def add_keys_parser(commands: Any) -> None:
    """Add ``tierwise keys …`` to the CLI's subcommands."""
    keys = commands.add_parser("keys", help="create, list, show and revoke virtual keys")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key; prints it alone on the last line")
    create.add_argument("--config", required=True)
    create.add_argument("--tenant", required=True)
    create.add_argument("--id", help="the key's id (default: key_<random>)")
    create.add_argument("--allowed-tiers", help="comma-separated tiers the key may use")
    create.add_argument("--allowed-models", help="comma-separated models the key may use")
    create.add_argument("--user-tier", help="the user_tier feature of the key's requests")
    create.add_argument("--daily-usd", type=float, help="the key's own daily budget")
    create.add_argument("--monthly-usd", type=float, help="the key's own monthly budget")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute")
    listing = actions.add_parser("list", help="list keys (config and created), with revocations")
    listing.add_argument("--config", required=True)
    for name, text in (("show", "show one key"), ("revoke", "revoke a key on every replica at once")):
        action = actions.add_parser(name, help=text)
        action.add_argument("key", metavar="KEY_OR_ID")
        action.add_argument("--config", required=True)
    hashing = actions.add_parser(
        "hash", help="print the hash a config key entry needs (secret read from stdin)"
    )
    hashing.add_argument("--new", action="store_true", help="generate a new secret and print it too")
    keys.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from .access.keys import hash_secret, new_secret

    if args.action == "hash":
        secret = new_secret() if args.new else sys.stdin.readline().strip()
        print(f"hash: {hash_secret(secret)}")
        if args.new:
            print(secret)
        return 0
    return asyncio.run(_with_keys(args))


async def _with_keys(args: argparse.Namespace) -> int:
    from .access import Keys
    from .config import load_config
    from .errors import ConfigError
    from .state import open_state

    config = load_config(args.config)
    if args.action in ("create", "revoke") and config.storage.state.startswith("memory://"):
        raise ConfigError(
            f"{args.config}: storage.state is memory://, which no gateway shares with this command; to "
            f"{args.action} keys from here the config needs redis://… (or use POST /admin/keys on the "
            "running gateway; config keys are declared under keys: with `tierwise keys hash`)"
        )
    state = open_state(config.storage.state)
    try:
        return await _act(args, Keys(config, state))
    finally:
        await state.close()


async def _act(args: argparse.Namespace, keys: Keys) -> int:
    if args.action == "create":
        record, secret = await keys.create(args.tenant, key_id=args.id, grants=_grants(args))
        print(f"created key {record.id} of tenant {record.tenant}; it is shown once, keep it now:")
        print(secret)
    elif args.action == "list":
        for record in await keys.all():
            state = "revoked" if record.revoked else "active"
            tiers = ",".join(record.grants.allowed_tiers or ()) or "-"
            print(f"{record.id:<24} {record.tenant:<16} {record.source:<7} {state:<8} tiers={tiers}")
    elif args.action == "show":
        print(json.dumps((await keys.find(args.key)).to_json(), indent=2))
    elif args.action == "revoke":
        record = await keys.revoke(args.key)
        print(f"revoked key {record.id} of tenant {record.tenant}")
    return 0


def _grants(args: argparse.Namespace) -> dict[str, Any]:
    grants: dict[str, Any] = {}
    if args.allowed_tiers:
        grants["allowed_tiers"] = [t.strip() for t in args.allowed_tiers.split(",") if t.strip()]
    if args.allowed_models:
        grants["allowed_models"] = [m.strip() for m in args.allowed_models.split(",") if m.strip()]
    if args.user_tier:
        grants["user_tier"] = args.user_tier
    budget = {k: v for k, v in (("daily_usd", args.daily_usd), ("monthly_usd", args.monthly_usd)) if v}
    if budget:
        grants["budget"] = budget
    limits = {k: v for k, v in (("requests_per_minute", args.rpm), ("tokens_per_minute", args.tpm)) if v}
    if limits:
        grants["rate_limits"] = limits
    return grants
