"""What users import is a promise: the public surface is pinned, and importing is cheap.

The rule: ``tierwise.__all__`` lists every name ``import tierwise`` exposes that does not start with ``_``
and is not a module. A submodule is imported by its own name (``tierwise.evals.datasets``); that some are
attributes of the package after ``import tierwise`` is a side effect of what imported them, not API.
"""

from __future__ import annotations

import subprocess
import sys
from types import ModuleType

import tierwise


def test_all_lists_exactly_the_public_names() -> None:
    exposed = {
        name
        for name, value in vars(tierwise).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }
    assert sorted(tierwise.__all__) == sorted(exposed)
    assert len(set(tierwise.__all__)) == len(tierwise.__all__)


def test_the_only_modules_on_the_package_are_its_own_submodules() -> None:
    # A foreign module here (``import os`` in __init__) would read as tierwise.os.
    modules = {name: value for name, value in vars(tierwise).items() if isinstance(value, ModuleType)}
    assert all(value.__name__ == f"tierwise.{name}" for name, value in modules.items())


def test_import_loads_no_optional_or_heavy_dependency() -> None:
    probe = (
        "import sys, tierwise; "
        "heavy = {'asyncpg', 'redis', 'openai', 'anthropic', 'numpy', 'torch', 'sklearn', 'matplotlib', "
        "'tiktoken', 'uvloop', 'tierwise.providers.openai', 'tierwise.providers.anthropic'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
