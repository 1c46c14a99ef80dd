"""Provider adapters: translate the canonical call to one upstream's wire format, and back.

Adding a provider is one new module and one line here. Adapters are imported only when a config
uses their kind, so ``import tierwise`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ..config import ProviderConfig
from .base import Chunk, Completion, Provider, UpstreamCall, Usage

PROVIDER_KINDS: dict[str, str] = {
    "openai": "tierwise.providers.openai:OpenAIProvider",
    "anthropic": "tierwise.providers.anthropic:AnthropicProvider",
    "replay": "tierwise.providers.replay:ReplayProvider",
}


def build_provider(name: str, config: ProviderConfig, *, http: Any) -> Provider:
    """Instantiate the adapter for ``config.kind``; ``http`` is the shared HttpPool."""
    module_name, _, class_name = PROVIDER_KINDS[config.kind].partition(":")
    factory = getattr(import_module(module_name), class_name)
    return factory(name, config, http=http)


__all__ = ["PROVIDER_KINDS", "Chunk", "Completion", "Provider", "UpstreamCall", "Usage", "build_provider"]
