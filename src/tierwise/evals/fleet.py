"""The fleet an evaluation replays: which dataset models play which tiers, at which prices.

A policy config names its models' ``upstream`` ids; in an evaluation those are the dataset's model
names (as with the replay provider). Without a config, each built-in dataset has a default fleet: the
benchmark's cheap model as draft and its strong model as execution (arena-bench-v1 adds
GPT-3.5-turbo-1106 as review, like the demo), at the list prices of when the data was made.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..config import Config, ModelEntry, load_config, parse_config
from ..errors import ConfigError
from .records import EvalDataset

# Context windows of the models in the shipped datasets (tokens), for the same skip rule as dispatch.
CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-4-1106-preview": 128_000,
    "gpt-4-0314": 8_192,
    "gpt-3.5-turbo-1106": 16_385,
    "gpt-3.5-turbo": 4_096,
    "mistralai/Mixtral-8x7B-Instruct-v0.1": 32_768,
    "Mixtral-8x7B-Instruct-v0.1": 32_768,
    "claude-2.1": 200_000,
    "claude-1": 100_000,
    "claude-instant-1": 100_000,
    "Llama-2-70b-chat": 4_096,
    "Mistral-7B-Instruct-v0.1": 8_192,
}
_DEFAULT_CONTEXT = 8_192


@dataclass(frozen=True, slots=True)
class EvalFleet:
    """Fleet models in order cheapest → strongest, each mapped to a dataset model."""

    config: Config
    models: tuple[ModelEntry, ...]  # ordered by tier, then price
    dataset_models: tuple[str, ...]  # dataset model name of each entry of ``models``

    @property
    def cheapest(self) -> int:
        """Index of the always-cheapest model (lowest price of the fleet)."""
        prices = [m.price.input_per_mtok + m.price.output_per_mtok for m in self.models]
        return prices.index(min(prices))

    @property
    def strongest(self) -> int:
        """Index of the always-strongest model (the counterfactual of the gateway's ledger)."""
        return self.index(self.config.counterfactual().name)

    def index(self, fleet_name: str) -> int:
        for i, model in enumerate(self.models):
            if model.name == fleet_name:
                return i
        raise KeyError(fleet_name)


def fleet_from_config(config: Config, dataset: EvalDataset) -> EvalFleet:
    """Map a config's models onto a dataset by their ``upstream`` id; every model must be in the data."""
    missing = [m.name for m in config.models if m.upstream not in dataset.models]
    if missing:
        raise ConfigError(
            f"models {', '.join(missing)}: their upstream ids are not models of dataset {dataset.name}; "
            f"it has: {', '.join(dataset.models)}"
        )
    order = {tier: i for i, tier in enumerate(config.tiers)}
    models = tuple(
        sorted(config.models, key=lambda m: (order[m.tier], m.price.input_per_mtok + m.price.output_per_mtok))
    )
    return EvalFleet(config, models, tuple(m.upstream for m in models))


def default_fleet(dataset: EvalDataset) -> EvalFleet:
    """The dataset's own cheap/strong pair (plus a review model for arena-bench-v1) at list prices."""
    if dataset.weak is None or dataset.strong is None:
        raise ConfigError(
            f"dataset {dataset.name} has no default cheap/strong pair: pass --policy with a config "
            "whose models' upstream ids name the dataset's models"
        )
    tiers = [(dataset.weak, "draft")]
    if "gpt-3.5-turbo-1106" in dataset.models and dataset.strong != "gpt-3.5-turbo-1106":
        tiers.append(("gpt-3.5-turbo-1106", "review"))
    tiers.append((dataset.strong, "execution"))
    models: list[dict[str, Any]] = []
    for upstream, tier in tiers:
        if upstream not in dataset.prices:
            raise ConfigError(f"dataset {dataset.name}: no list price for {upstream}")
        price_in, price_out = dataset.prices[upstream]
        models.append(
            {
                "name": upstream.rsplit("/", 1)[-1],
                "provider": "replay",
                "upstream": upstream,
                "tier": tier,
                "context_window": CONTEXT_WINDOWS.get(upstream, _DEFAULT_CONTEXT),
                "price": {"input_per_mtok": price_in, "output_per_mtok": price_out},
            }
        )
    config = parse_config(
        {
            "providers": {"replay": {"kind": "replay", "dataset": dataset.name}},
            "models": models,
            "storage": {"ledger": "none"},
        },
        source=f"default fleet of {dataset.name}",
    )
    return fleet_from_config(config, dataset)


def fleet_for(config: str | os.PathLike[str] | None, dataset: EvalDataset) -> EvalFleet:
    """The fleet a policy is replayed with: its config's models mapped onto ``dataset``, or without a
    config the dataset's own pair (``default_fleet``)."""
    return default_fleet(dataset) if config is None else fleet_from_config(load_config(config), dataset)
