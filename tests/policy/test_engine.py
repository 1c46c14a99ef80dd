"""The policy engine: the playbook as a table, properties over random features, config rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierwise.config import parse_config
from tierwise.errors import RequestError
from tierwise.features import QUALITIES, RISKS, TASKS, Features
from tierwise.policy.engine import PolicyEngine


def fleet(**extra: object) -> dict:
    def model(name: str, tier: str, price: float) -> dict:
        return {
            "name": name,
            "provider": "p",
            "upstream": name,
            "tier": tier,
            "context_window": 100_000,
            "price": {"input_per_mtok": price, "output_per_mtok": price * 2},
        }

    return {
        "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": [
            model("d1", "draft", 0.2),
            model("r1", "review", 1),
            model("e2", "execution", 5),
            model("e1", "execution", 3),
        ],
        **extra,
    }


ENGINE = PolicyEngine(parse_config(fleet()))


@pytest.mark.parametrize(
    ("features", "tier", "rule"),
    [
        (Features(task="classify", input_tokens=120), "draft", "cheap-task"),
        (Features(task="summarize", input_tokens=3000), "draft", "cheap-task"),
        (Features(task="code", input_tokens=120), "execution", "code-math"),
        (Features(task="math", input_tokens=120), "execution", "code-math"),
        (Features(task="chat", input_tokens=50, multi_step=True), "execution", "multi-step"),
        (Features(task="chat", input_tokens=50), "review", "default"),
        (Features(task="reasoning", input_tokens=50), "review", "default"),
        (Features(task="code", input_tokens=200, latency_ms=800), "draft", "fast-short"),
        (Features(task="code", input_tokens=900, latency_ms=800), "execution", "code-math"),
        (Features(task="classify", quality="high"), "review", "quality-high"),
        (Features(task="code", quality="high", latency_ms=100), "execution", "quality-high-hard"),
        (Features(task="classify", risk="critical"), "execution", "critical"),
        (Features(task="chat", has_code=True), "execution", "code-in-conversation"),
    ],
)
def test_playbook(features: Features, tier: str, rule: str) -> None:
    decision = ENGINE.decide(features)
    assert (decision.tier, decision.rule) == (tier, rule), decision.reason


def test_chains_go_cheapest_first_then_fall_back() -> None:
    assert ENGINE.decide(Features(task="classify")).chain == ("d1", "r1")
    assert ENGINE.decide(Features(task="code")).chain == ("e1", "e2", "r1")
    critical = ENGINE.decide(Features(task="chat", risk="critical"))
    assert critical.chain == ("e1", "e2", "r1")  # every execution model first, then review


def test_reason_names_rule_and_features() -> None:
    decision = ENGINE.decide(Features(task="code", input_tokens=212, latency_ms=800))
    assert decision.reason == "rule fast-short: input_tokens=212 < 500, latency_ms=800 < 1000 → draft"
    assert decision.layer == "rules"
    assert decision.policy_version == ENGINE.version


def test_manual_override_tier_request_and_hint() -> None:
    manual = ENGINE.decide(Features(task="classify"), model="e2")
    assert manual.chain == ("e2",) and manual.layer == "manual" and manual.tier == "execution"
    assert ENGINE.decide(Features(), model="review").chain[0] == "r1"
    hinted = ENGINE.decide(Features(task="classify", tier="execution"))
    assert hinted.tier == "execution" and hinted.rule == "tier-hint"


def test_unknown_model_is_404_naming_the_field() -> None:
    with pytest.raises(RequestError) as info:
        ENGINE.decide(Features(), model="gpt-17")
    assert info.value.status == 404 and info.value.param == "model"
    with pytest.raises(RequestError, match="unknown tier 'ultra'"):
        ENGINE.decide(Features(tier="ultra"))


def test_empty_tier_resolves_to_next_stronger() -> None:
    data = fleet()
    data["models"] = [m for m in data["models"] if m["tier"] != "draft"]
    engine = PolicyEngine(parse_config(data))
    decision = engine.decide(Features(task="classify"))
    assert decision.tier == "review" and decision.chain[0] == "r1"


def test_config_rules_first_match_and_operators() -> None:
    rules = [
        {"name": "vip", "when": {"user_tier": {"in": ["gold"]}}, "model": "e2"},
        {"name": "big", "when": {"input_tokens": {">=": 10_000}}, "tier": "execution", "fallbacks": ["d1"]},
        {"name": "ssn", "when": {"text": {"regex": r"\d{3}-\d{2}-\d{4}"}}, "tier": "review"},
        {"name": "not-chat", "when": {"task": {"not_in": ["chat"]}, "json_mode": True}, "tier": "draft"},
    ]
    engine = PolicyEngine(parse_config(fleet(policy={"rules": rules, "default": {"tier": "review"}})))
    assert engine.decide(Features(user_tier="gold", input_tokens=50_000)).rule == "vip"
    big = engine.decide(Features(input_tokens=10_000))
    assert big.rule == "big" and big.chain == ("e1", "e2", "d1")
    assert engine.decide(Features(text="my ssn is 123-45-6789")).rule == "ssn"
    assert engine.decide(Features(task="extract", json_mode=True)).rule == "not-chat"
    assert engine.decide(Features(task="chat", json_mode=True)).rule == "default"
    # a numeric test on an unset feature does not hold
    lat = PolicyEngine(
        parse_config(
            fleet(policy={"rules": [{"name": "fast", "when": {"latency_ms": {"<": 1000}}, "tier": "draft"}]})
        )
    )
    assert lat.decide(Features(latency_ms=None)).rule == "default"
    assert lat.decide(Features(latency_ms=10)).rule == "fast"


def test_global_fallbacks_extend_chains() -> None:
    engine = PolicyEngine(parse_config(fleet(policy={"fallbacks": {"d1": ["e1"]}})))
    assert engine.decide(Features(task="classify")).chain == ("d1", "e1", "r1")


features_strategy = st.builds(
    Features,
    task=st.sampled_from(TASKS),
    input_tokens=st.integers(0, 2_000_000),
    max_output_tokens=st.none() | st.integers(1, 100_000),
    turns=st.integers(1, 50),
    has_code=st.booleans(),
    has_math=st.booleans(),
    multi_step=st.booleans(),
    has_tools=st.booleans(),
    json_mode=st.booleans(),
    latency_ms=st.none() | st.integers(1, 60_000),
    risk=st.sampled_from(RISKS),
    quality=st.sampled_from(QUALITIES),
    tier=st.none() | st.sampled_from(("draft", "review", "execution")),
    text=st.text(max_size=200),
)


@given(features_strategy)
def test_every_decision_is_a_valid_deterministic_chain(features: Features) -> None:
    decision = ENGINE.decide(features)
    names = {"d1", "r1", "e1", "e2"}
    assert decision.chain and set(decision.chain) <= names
    assert len(set(decision.chain)) == len(decision.chain)
    assert ENGINE.tier_of(decision.chain[0]) == decision.tier
    assert decision.reason
    assert ENGINE.decide(features) == decision


@given(features_strategy)
def test_critical_never_starts_below_execution_and_high_quality_never_drafts(features: Features) -> None:
    decision = ENGINE.decide(features)
    if features.tier is None and features.risk == "critical":
        assert decision.tier == "execution"
    if features.tier is None and features.quality == "high":
        assert decision.tier != "draft"


def test_a_constraint_caps_the_tier_and_says_why() -> None:
    from tierwise.policy.engine import Constraint

    code = Features(task="code", input_tokens=120)
    capped = ENGINE.decide(code, constraint=Constraint(max_tier="review", why="budget: tenant t at 85%"))
    assert (capped.tier, capped.chain[0]) == ("review", "r1")
    assert capped.reason.startswith("rule code-math:") and capped.reason.endswith(
        "; budget: tenant t at 85% → review"
    )
    # Under the cap nothing changes, reason included.
    cheap = Features(task="classify", input_tokens=120)
    assert ENGINE.decide(cheap, constraint=Constraint(max_tier="review")) == ENGINE.decide(cheap)


def test_a_constraint_narrows_the_chain_or_refuses() -> None:
    from tierwise.errors import AccessDenied
    from tierwise.policy.engine import Constraint

    code = Features(task="code", input_tokens=120)
    narrowed = ENGINE.decide(code, constraint=Constraint(models=frozenset({"e1"})))
    assert narrowed.chain == ("e1",) and narrowed.tier == "execution"
    with pytest.raises(AccessDenied) as caught:
        ENGINE.decide(code, constraint=Constraint(models=frozenset({"d1"})))
    assert caught.value.status == 403 and "e1, e2" in caught.value.message
