"""tierwise: route every LLM request to the cheapest model that can do it well.

Importing tierwise does no I/O and loads no provider, database or ML library.
"""

from ._version import __version__ as __version__
from .config import Config, load_config
from .errors import (
    ChainExhausted,
    ConfigError,
    ProviderError,
    RequestError,
    TierwiseError,
)
from .features import Features
from .policy.engine import Decision
from .router import Routed, RoutedStream, Router

__all__ = [
    "ChainExhausted",
    "Config",
    "ConfigError",
    "Decision",
    "Features",
    "ProviderError",
    "RequestError",
    "Routed",
    "RoutedStream",
    "Router",
    "TierwiseError",
    "load_config",
]
