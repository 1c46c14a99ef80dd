"""Per-model prompt templates: the rewrite itself, what the upstream receives, the ledger, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from tests.harness import fleet_config, run_cli, start_stack
from tierwise.config import PromptTemplate, parse_config
from tierwise.errors import ConfigError
from tierwise.templates import apply_template

CLASSIFY = "Classify the sentiment of this review: 'Great battery.'"
ASKED = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": CLASSIFY}]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (
            PromptTemplate(system_prefix="[A] ", system_suffix=" [Z]"),
            [{"role": "system", "content": "[A] You are terse. [Z]"}, {"role": "user", "content": CLASSIFY}],
        ),
        (
            PromptTemplate(fold_system=True),
            [{"role": "user", "content": "You are terse.\n\n" + CLASSIFY}],
        ),
        (
            PromptTemplate(system_prefix="Rules: ", fold_system=True),
            [{"role": "user", "content": "Rules: You are terse.\n\n" + CLASSIFY}],
        ),
    ],
    ids=["prefix-suffix", "fold", "prefix-then-fold"],
)
def test_apply_template(template: PromptTemplate, expected: list[dict[str, Any]]) -> None:
    body = {"model": "auto", "messages": ASKED}
    assert apply_template(template, body)["messages"] == expected
    assert body["messages"] == ASKED  # never mutated


def test_default_system_and_developer_role() -> None:
    template = PromptTemplate(default_system="Be brief.", developer_as_system=True)
    plain = apply_template(template, {"messages": [{"role": "user", "content": "hi"}]})
    assert plain["messages"][0] == {"role": "system", "content": "Be brief."}
    dev = apply_template(
        template, {"messages": [{"role": "developer", "content": "x"}, {"role": "user", "content": "y"}]}
    )
    assert dev["messages"][0] == {"role": "system", "content": "x"}


def test_fold_keeps_image_parts() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    body = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": [image]}]}
    folded = apply_template(PromptTemplate(fold_system=True), body)["messages"]
    assert folded == [{"role": "user", "content": [{"type": "text", "text": "S"}, image]}]


def test_template_ids() -> None:
    assert PromptTemplate(id="no-system").template_id() == "no-system"
    auto = PromptTemplate(fold_system=True).template_id()
    assert auto.startswith("tpl-") and auto == PromptTemplate(fold_system=True).template_id()
    assert auto != PromptTemplate(fold_system=False).template_id()


def test_unknown_template_keys_are_config_errors() -> None:
    config = fleet_config({"cheap": "http://x", "backup": "http://x", "strong": "http://x"}, ledger="none")
    config["models"][0]["template"] = {"fold_sytem": True}
    with pytest.raises(ConfigError, match=r"models\.0\.template\.fold_sytem|fold_sytem"):
        parse_config(config)


def templated_models(urls_config: dict[str, Any]) -> dict[str, Any]:
    urls_config["models"][0]["template"] = {
        "id": "draft-fold",
        "system_prefix": "[draft] ",
        "fold_system": True,
    }
    urls_config["models"][2]["template"] = {"system_suffix": " Answer in English."}
    return urls_config


def test_the_upstream_receives_the_templated_messages(tmp_path: Path) -> None:
    models = templated_models(
        {"models": fleet_config({"cheap": "", "backup": "", "strong": ""}, ledger="")["models"]}
    )
    s = start_stack(tmp_path, models=models["models"])
    try:
        with openai.OpenAI(base_url=s.base_url, api_key="k", max_retries=0, timeout=20) as c:
            c.chat.completions.create(model="draft-1", messages=ASKED)  # OpenAI wire
            c.chat.completions.create(model="exec-1", messages=ASKED)  # Anthropic wire
            c.chat.completions.create(model="review-1", messages=ASKED)  # no template
        cheap = s.upstreams["cheap"].requests[-1]
        assert cheap["messages"] == [{"role": "user", "content": "[draft] You are terse.\n\n" + CLASSIFY}]
        strong = s.upstreams["strong"].requests[-1]
        assert strong["system"] in (
            "You are terse. Answer in English.",
            [{"type": "text", "text": "You are terse. Answer in English."}],
        )
        assert s.upstreams["backup"].requests[-1]["messages"] == ASKED
        templates = [[a.template for a in row.attempts] for row in s.rows()]
        assert templates[0] == ["draft-fold"]
        assert templates[1][0] is not None and templates[1][0].startswith("tpl-")
        assert templates[2] == [None]
    finally:
        s.close()


def test_route_explain_shows_what_the_first_model_receives(tmp_path: Path) -> None:
    config = templated_models(
        fleet_config(
            {"cheap": "http://127.0.0.1:9", "backup": "http://127.0.0.1:9", "strong": "http://127.0.0.1:9"},
            ledger="none",
        )
    )
    path = tmp_path / "tierwise.yaml"
    path.write_text(yaml.safe_dump(config))
    args = (
        "route",
        "--config",
        str(path),
        "--explain",
        "--model",
        "draft-1",
        "--system",
        "You are terse.",
        CLASSIFY,
    )
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "template draft-fold: draft-1 receives" in result.stdout
    assert "[draft] You are terse." in result.stdout
    shown = json.loads(run_cli(*args, "--json").stdout)
    assert shown["template"] == "draft-fold"
    assert shown["upstream_messages"] == [
        {"role": "user", "content": "[draft] You are terse.\n\n" + CLASSIFY}
    ]
