"""Per-model prompt templates: the same request, rewritten for how one model wants to be prompted.

A prompt tuned on one model often reads differently to another: one needs its system prompt framed,
another has no system role at all. ``models[].template`` says so once, and ``apply_template`` rewrites
the canonical request for that model. ``UpstreamCall`` applies it when an attempt is built, so every
adapter, and every purpose (answers, judges, samples, classifier, shadow), sends the same rewrite.
Pure functions over plain dicts; never mutates the body it is given.
"""

from __future__ import annotations

from typing import Any

from .config import PromptTemplate
from .messages import content_text

_SYSTEM_ROLES = ("system", "developer")


def apply_template(template: PromptTemplate | None, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` as the model with ``template`` should receive it (``body`` itself when there is none)."""
    if template is None or not isinstance(body.get("messages"), list):
        return body
    messages = [dict(m) if isinstance(m, dict) else m for m in body["messages"]]
    if template.developer_as_system:
        for message in messages:
            if isinstance(message, dict) and message.get("role") == "developer":
                message["role"] = "system"
    if template.default_system and not any(_is_system(m) for m in messages):
        messages.insert(0, {"role": "system", "content": template.default_system})
    if template.system_prefix or template.system_suffix:
        first = next((m for m in messages if _is_system(m)), None)
        if first is not None:
            text = content_text(first.get("content"))
            first["content"] = template.system_prefix + text + template.system_suffix
    if template.fold_system:
        messages = _fold_system(messages)
    return {**body, "messages": messages}


def _is_system(message: Any) -> bool:
    return isinstance(message, dict) and message.get("role") in _SYSTEM_ROLES


def _fold_system(messages: list[Any]) -> list[Any]:
    """Every system message's text moved to the head of the first user turn (its own turn if none)."""
    system = [content_text(m.get("content")) for m in messages if _is_system(m)]
    rest = [m for m in messages if not _is_system(m)]
    if not system:
        return rest
    text = "\n\n".join(t for t in system if t)
    for i, message in enumerate(rest):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # keep images and other parts: the text goes in front
                rest[i] = {**message, "content": [{"type": "text", "text": text}, *content]}
            else:
                rest[i] = {**message, "content": text + "\n\n" + content_text(content)}
            return rest
    return [{"role": "user", "content": text}, *rest]


__all__ = ["apply_template"]
