"""Config validation: every error names its field path and what was expected."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tierwise.config import DEFAULT_TIERS, load_config, parse_config
from tierwise.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

BASE = {
    "providers": {"up": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "UP_KEY"}},
    "models": [
        {
            "name": "cheap",
            "provider": "up",
            "upstream": "cheap-1",
            "price": {"input_per_mtok": 0.5, "output_per_mtok": 1.0},
            "context_window": 8000,
            "tier": "draft",
        },
        {
            "name": "strong",
            "provider": "up",
            "upstream": "strong-1",
            "price": {"input_per_mtok": 5, "output_per_mtok": 15},
            "context_window": 128000,
            "tier": "execution",
        },
    ],
}


def with_change(path: str, value: object) -> dict:
    data = copy.deepcopy(BASE)
    target = data
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target.setdefault(key, {})
    last = keys[-1]
    if last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return data


def error_of(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="t.yaml")
    return str(info.value)


def test_minimal_config_gets_defaults() -> None:
    config = parse_config(BASE)
    assert config.tiers == DEFAULT_TIERS
    assert config.storage.ledger == "sqlite:///./tierwise.db"
    assert (config.storage.spill_dir, config.storage.spill_max_bytes) == (None, 1 << 30)
    assert config.policy.rules is None
    assert config.counterfactual().name == "strong"
    assert len(config.policy_version()) == 12


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("models.1.price.input_per_mtok", -1, "models[1].price.input_per_mtok: must be ≥ 0"),
        ("models.0.context_window", 0, "models[0].context_window: must be > 0"),
        ("models.0.provider", "deepsek", "models[0].provider: unknown provider 'deepsek'; defined: up"),
        ("models.0.tier", "cheapest", "models[0].tier: unknown tier 'cheapest'"),
        ("models.0.colour", "red", "models[0].colour: unknown key"),
        ("providers.up.kind", "grpc", "providers.up.kind: must be one of 'openai', 'anthropic' or 'replay'"),
        ("providers.up.base_url", "ftp://x", "providers.up.base_url: must start with http:// or https://"),
        ("storage.ledger", "mysql://x", "storage.ledger: must be sqlite:///PATH, postgresql://… or none"),
        ("storage.spill_max_bytes", -1, "storage.spill_max_bytes: must be ≥ 0"),
        (
            "policy.rules",
            [{"name": "r", "when": {"tsk": "code"}, "tier": "draft"}],
            "policy.rules[0].when.tsk: unknown feature",
        ),
        (
            "policy.rules",
            [{"name": "r", "when": {"input_tokens": {"<": "x"}}, "tier": "draft"}],
            "policy.rules[0].when.input_tokens.<: must be a number",
        ),
        (
            "policy.rules",
            [{"name": "r", "when": {"task": {"like": "x"}}, "tier": "draft"}],
            "policy.rules[0].when.task.like: unknown operator",
        ),
        (
            "policy.rules",
            [{"name": "r", "when": {}, "tier": "draft", "model": "cheap"}],
            "policy.rules[0]: exactly one of 'tier' or 'model' is required",
        ),
        (
            "policy.rules",
            [{"name": "r", "when": {}, "model": "nope"}],
            "policy.rules[0].model: unknown model 'nope'",
        ),
        (
            "policy.rules",
            [{"name": "r", "when": {}, "tier": "draft", "fallbacks": ["zzz"]}],
            "policy.rules[0].fallbacks[0]: 'zzz' is neither a model nor a tier",
        ),
        ("policy.fallbacks", {"ghost": ["cheap"]}, "policy.fallbacks.ghost: unknown model"),
        ("policy.retry", {"attempts": 0}, "policy.retry.attempts: must be ≥ 1"),
        ("policy.cooldown.mode", "window", "policy.cooldown.mode: must be one of 'ratio' or 'consecutive'"),
        ("policy.cooldown", {"failure_ratio": 1.5}, "policy.cooldown.failure_ratio: must be ≤ 1"),
        ("policy.cooldown", {"min_calls": 0}, "policy.cooldown.min_calls: must be ≥ 1"),
        ("policy.cooldown", {"window_s": 0}, "policy.cooldown.window_s: must be > 0"),
        (
            "policy.cooldown",
            {"seconds": 30, "max_seconds": 10},
            "policy.cooldown.max_seconds: must be ≥ seconds (30), got 10",
        ),
        (
            "policy.cooldown",
            {"mode": "consecutive", "min_calls": 50},
            "policy.cooldown.min_calls: only for mode ratio; mode is consecutive",
        ),
    ],
)
def test_errors_name_the_field(path: str, value: object, expected: str) -> None:
    message = error_of(with_change(path, value))
    assert expected in message, message
    assert message.startswith("t.yaml: invalid configuration")


def test_a_cooldown_written_for_the_consecutive_breaker_still_loads() -> None:
    cooldown = parse_config(with_change("policy.cooldown", {"failures": 3, "seconds": 30})).policy.cooldown
    assert (cooldown.mode, cooldown.failures, cooldown.seconds) == ("ratio", 3, 30)
    cooldown = parse_config(
        with_change("policy.cooldown", {"mode": "consecutive", "failures": 5, "seconds": 30})
    ).policy.cooldown
    assert (cooldown.mode, cooldown.failures, cooldown.seconds) == ("consecutive", 5, 30)


def test_missing_required_fields_are_named() -> None:
    data = copy.deepcopy(BASE)
    del data["models"][0]["price"]
    assert "models[0].price: required" in error_of(data)
    assert "models: required" in error_of({"providers": BASE["providers"]})


def test_duplicate_model_names() -> None:
    data = copy.deepcopy(BASE)
    data["models"][1]["name"] = "cheap"
    assert "models[1].name: duplicate model name 'cheap'" in error_of(data)


def test_top_level_must_be_mapping() -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config([1, 2])


def test_api_key_error_names_the_variable_not_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config(BASE)
    monkeypatch.delenv("UP_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"providers\.up\.api_key_env: UP_KEY is not set"):
        config.providers["up"].api_key("up")
    monkeypatch.setenv("UP_KEY", "sk-secret-value")
    assert config.providers["up"].api_key("up") == "sk-secret-value"


def test_yaml_errors_say_where(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n  up: {kind: openai\nmodels: []\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_policy_version_changes_with_policy() -> None:
    a = parse_config(BASE).policy_version()
    b = parse_config(
        with_change("policy.rules", [{"name": "r", "when": {}, "tier": "draft"}])
    ).policy_version()
    c = parse_config(with_change("models.0.price.input_per_mtok", 0.6)).policy_version()
    assert len({a, b, c}) == 3
    assert parse_config(copy.deepcopy(BASE)).policy_version() == a


def test_policy_version_is_the_same_in_every_checkout() -> None:
    """The learned artefact's path is resolved per checkout; the engine adds the artefact's content hash."""
    here = with_change("policy.learned", {"artefact": "/srv/a/router.npz", "uncertain_band": 0.05})
    there = with_change("policy.learned", {"artefact": "/home/b/router.npz", "uncertain_band": 0.05})
    wider = with_change("policy.learned", {"artefact": "/srv/a/router.npz", "uncertain_band": 0.1})
    assert parse_config(here).policy_version() == parse_config(there).policy_version()
    assert parse_config(here).policy_version() != parse_config(wider).policy_version()


@pytest.mark.parametrize("name", ["tierwise.yaml", "demo.yaml"])
def test_shipped_examples_validate(name: str) -> None:
    config = load_config(ROOT / "examples" / name)
    assert config.models


def test_a_list_with_a_bad_item_reports_the_item_not_an_empty_list() -> None:
    bad = with_change("policy.cascade", {"verifiers": [{"kind": "bogus"}]})
    with pytest.raises(ConfigError) as caught:
        parse_config(bad)
    message = str(caught.value)
    assert "policy.cascade.verifiers[0].kind: must be one of" in message
    assert "must not be empty" not in message
    with pytest.raises(ConfigError, match=r"policy.cascade.verifiers: must not be empty"):
        parse_config(with_change("policy.cascade", {"verifiers": []}))


ACCESS_HASH = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("access", "expected"),
    [
        ({"auth": {"mode": "keys"}}, "auth.mode: keys needs at least one tenant under tenants"),
        ({"auth": {"mode": "open"}}, "auth.mode: must be one of 'none' or 'keys'"),
        (
            {"tenants": {"t": {}}, "keys": [{"id": "k", "tenant": "nobody", "hash": ACCESS_HASH}]},
            "keys[0].tenant: unknown tenant 'nobody'; tenants: t",
        ),
        (
            {"tenants": {"t": {}}, "keys": [{"id": "k", "tenant": "t", "hash": "plaintext-key"}]},
            "keys[0].hash: string should match pattern",
        ),
        ({"tenants": {"t": {"allowed_tiers": ["gold"]}}}, "tenants.t.allowed_tiers: unknown tier 'gold'"),
        (
            {"tenants": {"t": {"allowed_models": ["gpt-9"]}}},
            "tenants.t.allowed_models: unknown model 'gpt-9'",
        ),
        ({"tenants": {"t": {"budget": {"daily_usd": -1}}}}, "tenants.t.budget.daily_usd: must be > 0"),
        ({"tenants": {"t": {"budget": {"downgrade_at": 1.5}}}}, "tenants.t.budget.downgrade_at: must be ≤ 1"),
        (
            {"tenants": {"t": {"budget": {"downgrade_tier": "gold"}}}},
            "tenants.t.budget.downgrade_tier: unknown tier 'gold'",
        ),
        ({"tenants": {"t": {"rate_limits": {"rpm": 5}}}}, "tenants.t.rate_limits.rpm: unknown key"),
        (
            {
                "tenants": {"t": {}},
                "keys": [
                    {"id": "k", "tenant": "t", "hash": ACCESS_HASH},
                    {"id": "k", "tenant": "t", "hash": "sha256:" + "cd" * 32},
                ],
            },
            "keys[1].id: duplicate key id 'k'",
        ),
    ],
)
def test_access_errors_name_the_field(access: dict, expected: str) -> None:
    assert expected in error_of({**copy.deepcopy(BASE), **access})


def test_access_config_loads_frozen() -> None:
    config = parse_config(
        {
            **copy.deepcopy(BASE),
            "auth": {"mode": "keys"},
            "tenants": {"acme": {"budget": {"monthly_usd": 100}, "rate_limits": {"requests_per_minute": 60}}},
            "keys": [{"id": "ci", "tenant": "acme", "hash": ACCESS_HASH, "allowed_tiers": ["draft"]}],
        }
    )
    assert config.auth.master_key_env == "TIERWISE_MASTER_KEY"
    assert config.tenants["acme"].budget.downgrade_at == 0.8
    assert config.keys[0].allowed_tiers == ("draft",)
    with pytest.raises(ValueError):
        config.tenants["acme"].budget.daily_usd = 5  # type: ignore[misc]
