"""What users import is a promise: the public surface is pinned, and importing is cheap."""

from __future__ import annotations

import subprocess
import sys

import tierwise

PUBLIC = {
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
}


def test_all_lists_exactly_the_public_names() -> None:
    assert set(tierwise.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(tierwise, name) is not None


def test_import_loads_no_optional_or_heavy_dependency() -> None:
    probe = (
        "import sys, tierwise; "
        "heavy = {'asyncpg', 'redis', 'openai', 'anthropic', 'numpy', 'torch', 'sklearn', 'matplotlib', "
        "'tiktoken', 'uvloop', 'tierwise.providers.openai', 'tierwise.providers.anthropic'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
