"""A config's PolicyEngine, with its learned router loaded when the config has one (the gap-threshold
router or the quality − λ·cost utility router: the artefact says which).

The Router (and its canary arm), ``tierwise route``, ``tierwise estimate`` and the eval's rules replay
all build an engine from a config the same way; the artefact, numpy and the embeddings load only here,
and only when ``policy.learned`` asks for them.
"""

from __future__ import annotations

from .config import Config
from .policy.engine import PolicyEngine


def load_engine(config: Config) -> PolicyEngine:
    """The engine of ``config``; raises ConfigError if its learned router's artefact cannot be read."""
    learned = None
    if config.policy.learned is not None:
        from .artefact import load_learned_router  # numpy and the embeddings: only for this router

        learned = load_learned_router(config)
    return PolicyEngine(config, learned=learned)
