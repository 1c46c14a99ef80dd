"""Reading OpenAI-shaped chat requests and completions: the one place that says what a message's text is.

Features, the classifier, the cascade's verifiers and judge, the replay provider, training and the CLI
all read text through here, so a multi-part message is the same text to each of them: its text parts
(``text``, and the Responses API's ``input_text``/``output_text``) joined by a newline, so that two
parts never run their words together. Image, audio and file parts carry no text.

Also here: the routing-hint keys a request may carry (headers and ``metadata``), what is removed from a
body before it goes upstream, and what a call made *about* a request (a sample, a shadow) drops.
Pure functions over plain dicts; imports nothing of tierwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
PART_SEPARATOR = "\n"

HINT_KEYS: tuple[str, ...] = ("task", "quality", "latency_ms", "risk", "tier", "user_tier")
# x-tierwise-latency-ms → latency_ms
HINT_HEADERS: dict[str, str] = {f"x-tierwise-{k.replace('_', '-')}": k for k in HINT_KEYS}
# In ``metadata`` a hint may be named plainly or with the prefix, where a client's own keys might clash.
HINT_METADATA_KEYS: dict[str, str] = {name: k for k in HINT_KEYS for name in (k, f"tierwise_{k}")}
# The response cache's opt-out (``off``), read like the hints: header first, then ``metadata``.
CACHE_HEADER = "x-tierwise-cache"
CACHE_METADATA_KEY = "tierwise_cache"
# What ``without_hints`` removes from ``metadata``: tierwise's own keys, never sent upstream.
_TIERWISE_METADATA = frozenset(HINT_METADATA_KEYS) | {CACHE_METADATA_KEY}
# A second call about the same request (an agreement sample, a shadow) is one plain JSON answer.
SIDE_CALL_DROPPED: tuple[str, ...] = ("stream", "stream_options", "n")


def content_text(content: Any) -> str:
    """The text of one message's ``content``: a string as it is, or its text parts joined by newlines."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = [
        part["text"]
        for part in content
        if isinstance(part, Mapping) and part.get("type") in TEXT_PARTS and isinstance(part.get("text"), str)
    ]
    return texts[0] if len(texts) == 1 else PART_SEPARATOR.join(texts)


def has_image(content: Any) -> bool:
    """Whether a message's ``content`` holds an image part."""
    return isinstance(content, list) and any(
        isinstance(part, Mapping) and part.get("type") in IMAGE_PARTS for part in content
    )


def message_text(message: Any) -> str:
    """The text of one message ("" for anything that is not a message object)."""
    return content_text(message.get("content")) if isinstance(message, Mapping) else ""


def user_texts(messages: Iterable[Any]) -> list[str]:
    """The text of every user message, in order."""
    return [message_text(m) for m in messages or () if isinstance(m, Mapping) and m.get("role") == "user"]


def last_user_text(messages: Iterable[Any]) -> str:
    """The text of the last user message ("" if there is none)."""
    texts = user_texts(messages)
    return texts[-1] if texts else ""


def reply_message(completion: Any) -> Mapping[str, Any]:
    """The first choice's message of a chat completion ({} if it has none)."""
    choices = completion.get("choices") if isinstance(completion, Mapping) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return {}
    message = choices[0].get("message")
    return message if isinstance(message, Mapping) else {}


def reply_text(completion: Any) -> str:
    """The first choice's text ("" for a tool call or an empty answer)."""
    return message_text(reply_message(completion))


def without_hints(body: dict[str, Any]) -> dict[str, Any]:
    """The body to forward upstream: without the routing hints (and cache opt-out) tierwise read from
    ``metadata``.
    Returns ``body`` itself when there are none (the common case allocates nothing)."""
    metadata = body.get("metadata")
    if not metadata or not isinstance(metadata, dict) or not (metadata.keys() & _TIERWISE_METADATA):
        return body
    rest = {k: v for k, v in metadata.items() if k not in _TIERWISE_METADATA}
    out = dict(body)
    if rest:
        out["metadata"] = rest
    else:
        del out["metadata"]
    return out


def side_call_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body of a call made about a request (an agreement sample, a shadow): one JSON answer."""
    return {k: v for k, v in body.items() if k not in SIDE_CALL_DROPPED}
