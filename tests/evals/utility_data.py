"""A small generic-format dataset for the utility router's tests: three models whose quality *and* cost
depend on the prompt, written with token counts or with each answer's recorded cost."""

from __future__ import annotations

from pathlib import Path

import orjson

# name, (input, output) USD per 1M tokens, tier
MODELS: tuple[tuple[str, tuple[float, float], str], ...] = (
    ("small", (0.2, 0.2), "draft"),
    ("mid", (1.0, 2.0), "review"),
    ("large", (10.0, 30.0), "execution"),
)
INPUT_TOKENS = 30


def prompt_text(i: int) -> str:
    if i % 2 == 0:
        return f"Write a short cheerful poem about the colour of autumn leaf number {i}."
    return f"Prove step by step, rigorously, that {i} squared plus {i} is always an even number."


def answer(model: str, i: int) -> tuple[float, int]:
    """(score, output tokens): ``small`` is good only on poems; ``mid`` is good on both but writes long
    proofs; ``large`` is good everywhere at a steady length."""
    poem = i % 2 == 0
    if model == "small":
        return (0.8 if poem else 0.1), 40
    if model == "mid":
        return (0.85 if poem else 0.8), (60 if poem else 900)
    return 0.9, 120


def write_dataset(path: Path, *, prompts: int = 60, usd: bool = False) -> Path:
    """JSON Lines in the generic format; ``usd``: each row gives ``cost_usd`` instead of token counts."""
    prices = {name: price for name, price, _ in MODELS}
    lines = []
    for i in range(prompts):
        for name, _, _ in MODELS:
            score, out = answer(name, i)
            row: dict[str, object] = {
                "prompt_id": f"p{i}",
                "prompt": prompt_text(i),
                "model": name,
                "score": score,
            }
            if usd:
                p_in, p_out = prices[name]
                row["cost_usd"] = (INPUT_TOKENS * p_in + out * p_out) / 1e6
            else:
                row["input_tokens"], row["output_tokens"] = INPUT_TOKENS, out
            lines.append(orjson.dumps(row))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def config_text(artefact: Path | None = None, *, learned: str = "") -> str:
    """A replay fleet of the three models; with ``artefact``, routed by it (``learned``: more keys)."""
    models = "\n".join(
        f"  - {{name: {name}, provider: replay, upstream: {name}, tier: {tier}, context_window: 8192,"
        f" price: {{input_per_mtok: {p_in}, output_per_mtok: {p_out}}}}}"
        for name, (p_in, p_out), tier in MODELS
    )
    policy = f"policy:\n  learned: {{artefact: {artefact}{learned}}}\n" if artefact is not None else ""
    return (
        "providers:\n  replay: {kind: replay, dataset: arena-bench-v1}\n"
        f"models:\n{models}\n{policy}storage: {{ledger: none}}\n"
    )
