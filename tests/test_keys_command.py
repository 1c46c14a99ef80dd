"""`tierwise keys`: create, list, show and revoke keys in the config's state store, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import yaml

from tests.harness import fleet_config, run_cli, start_stack
from tierwise.access import hash_secret

URL = os.environ.get("TIERWISE_TEST_REDIS", "redis://127.0.0.1:6379/0")
CLASSIFY = [{"role": "user", "content": "Classify the sentiment of this review: 'Great battery.'"}]


def test_hash_prints_what_a_config_key_needs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tierwise.cli", "keys", "hash"],
        input="tw-some-secret\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"hash: {hash_secret('tw-some-secret')}"


def test_create_refuses_a_state_no_gateway_shares(tmp_path: Path) -> None:
    path = tmp_path / "tierwise.yaml"
    config = fleet_config({"cheap": "http://x", "backup": "http://x", "strong": "http://x"}, ledger="none")
    config["tenants"] = {"acme": {}}
    path.write_text(yaml.safe_dump(config))
    done = run_cli("keys", "create", "--config", str(path), "--tenant", "acme")
    assert done.returncode == 2
    assert "storage.state is memory://" in done.stderr


@pytest.fixture
def run_id() -> Iterator[str]:
    redis = pytest.importorskip("redis", reason="the Redis state needs the redis package")
    client = redis.Redis.from_url(URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except (OSError, redis.RedisError) as exc:
        pytest.skip(f"no Redis at {URL}: {type(exc).__name__}: {exc}")
    run = uuid.uuid4().hex[:10]
    yield run
    keys = list(client.scan_iter(match=f"tierwise:*{run}*"))
    if keys:
        client.delete(*keys)
    client.srem("tierwise:keys", f"cli-{run}")
    client.close()


def test_create_use_list_show_revoke(tmp_path: Path, run_id: str) -> None:
    tenant = f"team-{run_id}"
    stack = start_stack(
        tmp_path, auth={"mode": "keys"}, tenants={tenant: {}}, storage={"ledger": "none", "state": URL}
    )
    try:
        path = tmp_path / "tierwise.yaml"
        # The gateway's own config, as the operator's CLI would read it.
        path.write_text(yaml.safe_dump(stack.router.config.model_dump(mode="json", exclude_defaults=True)))
        done = run_cli(
            "keys", "create", "--config", str(path), "--tenant", tenant, "--id", f"cli-{run_id}",
            "--allowed-tiers", "draft", "--rpm", "100",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        secret = done.stdout.strip().splitlines()[-1]
        assert secret.startswith("tw-") and f"cli-{run_id}" in done.stdout
        with openai.OpenAI(base_url=stack.base_url, api_key=secret, max_retries=0) as c:
            raw = c.chat.completions.with_raw_response.create(model="auto", messages=CLASSIFY)
            assert raw.headers["x-tierwise-tier"] == "draft"
            listed = run_cli("keys", "list", "--config", str(path))
            assert f"cli-{run_id}" in listed.stdout and "active" in listed.stdout
            for ref in (secret, f"cli-{run_id}"):
                shown = run_cli("keys", "show", ref, "--config", str(path))
                assert shown.returncode == 0 and f'"id": "cli-{run_id}"' in shown.stdout
                assert secret not in shown.stdout
            revoked = run_cli("keys", "revoke", f"cli-{run_id}", "--config", str(path))
            assert revoked.returncode == 0 and "revoked" in revoked.stdout
            with pytest.raises(openai.AuthenticationError):  # at once, by the running gateway
                c.chat.completions.create(model="auto", messages=CLASSIFY)
        missing = run_cli("keys", "show", "tw-never-issued", "--config", str(path))
        assert missing.returncode == 1 and "no such key" in missing.stderr
        assert "tw-never-issued" not in missing.stderr
    finally:
        stack.close()
