"""How well does a router trained on the gateway's own ledger route? A simulation on real answers.

    python scripts/ledger_loop.py [--runs FEEDBACK/SHADOW,…] [--limit N] [--families linear]

GSM8K's recorded answers (RouteLLM's data: Mixtral-8x7B and GPT-4-1106) are served by a replay
provider. Half of the prompts (a seeded split) are *traffic*: each goes through an in-process
``Router`` running ``examples/cascade-gsm8k.yaml`` (every request starts at Mixtral; the offline
verifiers may escalate it to GPT-4) with ``storage.capture_prompts`` on. In each run, a share of the
callers (FEEDBACK) grade the answer they got through ``Router.afeedback``, with the benchmark's own
correctness of that answer, as a user who checks the result would; and with SHADOW > 0,
``policy.shadow`` asks GPT-4 that share of the requests Mixtral answered and labels the answer by
whether the two final numbers agree. ``tierwise train``'s procedure then fits a router on the ledger
alone (``evals/ledger_data.py``) and, for comparison, on the same traffic prompts with every answer
of both models labelled (what an offline benchmark gives). Both are measured on the other half of the
prompts, which neither saw: APGR and CPT(50%) of the router alone (RouteLLM's sweep), and of the
hybrid (router + the same cascade).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tierwise.config import parse_config  # noqa: E402
from tierwise.embeddings import load_wordllama  # noqa: E402
from tierwise.evals.datasets import load_dataset  # noqa: E402
from tierwise.evals.fleet import fleet_from_config  # noqa: E402
from tierwise.evals.hybrid import hybrid_routing  # noqa: E402
from tierwise.evals.ledger_data import load_ledger_dataset  # noqa: E402
from tierwise.evals.records import EvalDataset  # noqa: E402
from tierwise.evals.replay import matrices  # noqa: E402
from tierwise.evals.routing import Routing  # noqa: E402
from tierwise.evals.run import summarise  # noqa: E402
from tierwise.evals.splits import kfold  # noqa: E402
from tierwise.features import extract_features  # noqa: E402
from tierwise.policy.learned import encode, gap_scores, make_scorer  # noqa: E402
from tierwise.router import Router  # noqa: E402
from tierwise.train import FleetModel, pair_metrics, train_router  # noqa: E402

EXAMPLE = ROOT / "examples" / "cascade-gsm8k.yaml"


def replay_file(dataset: EvalDataset, path: Path) -> None:
    """The dataset's recorded answers in the replay provider's format (see ``tierwise/arena_data.py``)."""
    with gzip.open(path, "wb") as out:
        for prompt in dataset.prompts:
            text = str(prompt.messages[-1]["content"])
            models = {}
            for name, result in prompt.results.items():
                models[name] = {
                    "answer": result.response,
                    "score": None if result.score is None else 10 * result.score,
                    "output_tokens": result.output_tokens or 0,
                }
            first = next(iter(prompt.results.values()))
            row = {"question_id": prompt.id, "prompt": text, "input_tokens": first.input_tokens or 0}
            out.write(orjson.dumps({**row, "models": models}) + b"\n")


async def serve_traffic(config: Any, traffic: EvalDataset, feedback_rate: float, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    router = Router(config)
    if router.shadow is not None:
        router.shadow.random.seed(seed + 1)
    served = graded = 0
    try:
        for prompt in traffic.prompts:
            routed = await router.acomplete(list(prompt.messages))
            served += 1
            if rng.random() < feedback_rate:
                upstream = config.model(routed.model).upstream
                score = prompt.results[upstream].score
                await router.afeedback(routed.request_id, float(score))
                graded += 1
    finally:
        await router.aclose()
    return {"served": served, "graded": graded}


def models_of(config: Any) -> list[FleetModel]:
    return [
        FleetModel(m.name, m.price.input_per_mtok, m.price.output_per_mtok, m.upstream) for m in config.models
    ]


def measure(trained: Any, embedder: Any, test: EvalDataset, fleet: Any) -> dict[str, float]:
    """Router alone (RouteLLM sweep of its gap scores) and the hybrid (router + cascade) on ``test``."""
    meta = trained.meta
    scorer = make_scorer(meta["family"], trained.arrays, meta["params"])
    encoded = [encode(extract_features({"messages": list(p.messages)}), embedder) for p in test.prompts]
    quality = scorer.predict(np.stack([e.dense for e in encoded]), [e.tokens for e in encoded])
    names = [m["name"] for m in meta["models"]]
    strong, weak = int(meta["reference"]), 1 - int(meta["reference"])
    data = matrices(test, fleet)
    order = [names.index(m.name) for m in fleet.models]
    scores = gap_scores(quality, strong, weak)
    alone = pair_metrics(scores, data.scores[:, order.index(weak)], data.scores[:, order.index(strong)])
    at_target, sweep = hybrid_routing(
        trained, embedder, test, fleet, data, float(meta["default_threshold"]), scorer=scorer
    )
    routing = Routing(choice=at_target.choice, extra_cost=at_target.extra_cost, sweep=sweep)
    hybrid = summarise(routing, fleet, data, n_boot=0)
    return {
        "router_apgr": alone[0],
        "router_cpt50": alone[1],
        "hybrid_apgr": hybrid["apgr"],
        "hybrid_cpt50": hybrid["cpt_50"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs",
        default="0.1/0,0.3/0,1/0,0/0.1,0/0.3,0.1/0.3",
        help="comma list of FEEDBACK/SHADOW: the share of answers callers grade and the share of requests "
        "also asked of GPT-4 by a shadow call (policy.shadow)",
    )
    parser.add_argument("--limit", type=int, default=0, help="use only the first N prompts (a quick run)")
    parser.add_argument("--families", default="", help="comma list of model families (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    gsm8k = load_dataset("routellm-gsm8k")
    if args.limit:
        gsm8k = gsm8k.subset(list(range(min(args.limit, len(gsm8k)))))
    texts = [str(p.messages[-1]["content"]) for p in gsm8k.prompts]
    train_rows, test_rows = kfold(texts, 2, seed=args.seed)[0]
    traffic, test = gsm8k.subset(list(train_rows)), gsm8k.subset(list(test_rows))
    embedder = load_wordllama()
    from tierwise.train import CANDIDATES

    wanted = {f for f in args.families.split(",") if f}
    candidates = [c for c in CANDIDATES if not wanted or c[0] in wanted]
    results: list[tuple[str, dict[str, Any], dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        answers = Path(tmp) / "gsm8k-answers.jsonl.gz"
        replay_file(gsm8k, answers)
        doc = yaml.safe_load(EXAMPLE.read_text())
        doc["providers"] = {"replay": {"kind": "replay", "dataset": str(answers)}}
        for model in doc["models"]:
            model["provider"] = "replay"
        base = parse_config(doc)
        fleet = fleet_from_config(base, test)
        models = models_of(base)
        reference = base.counterfactual().name

        started = time.perf_counter()
        offline = train_router(
            [traffic], models, reference=reference, embedder=embedder, candidates=candidates
        )
        results.append(
            ("every answer labelled (offline benchmark)", {}, measure(offline, embedder, test, fleet))
        )
        print(f"trained on full labels in {time.perf_counter() - started:.1f} s", file=sys.stderr)

        for run in (r for r in args.runs.split(",") if r):
            rate, shadow = (float(x) for x in run.split("/"))
            ledger = Path(tmp) / f"ledger-{rate}-{shadow}.db"
            doc["storage"] = {"ledger": f"sqlite:///{ledger}", "capture_prompts": True}
            doc["policy"].pop("shadow", None)
            if shadow > 0:
                doc["policy"]["shadow"] = {"model": reference, "share": shadow, "answer": "number"}
            config = parse_config(doc)
            counts = asyncio.run(serve_traffic(config, traffic, rate, args.seed))
            dataset, found = asyncio.run(load_ledger_dataset(f"sqlite:///{ledger}"))
            trained = train_router(
                [dataset], models, reference=reference, embedder=embedder, candidates=candidates
            )
            info = {
                **counts,
                "labelled": found.labelled,
                "feedback_labels": found.feedback_labels,
                "shadow_labels": found.shadow_labels,
                "verifier_labels": found.verifier_labels,
            }
            label = f"ledger: {rate:.0%} graded, {shadow:.0%} shadowed"
            results.append((label, info, measure(trained, embedder, test, fleet)))
            print(f"{label}: {found.describe()}", file=sys.stderr)

    print(f"\nGSM8K: {len(traffic)} traffic prompts, {len(test)} held-out test prompts (seed {args.seed})\n")
    print(f"{'trained on':<44} {'router APGR':>11} {'CPT50':>7} {'hybrid APGR':>12} {'CPT50':>7}  labels")
    for label, info, m in results:
        extra = (
            f"{info['labelled']} prompts: {info['feedback_labels']} grades, {info['shadow_labels']} shadow, "
            f"{info['verifier_labels']} verdicts"
            if info
            else f"{len(traffic)} prompts × 2 models"
        )
        print(
            f"{label:<44} {m['router_apgr']:>11.3f} {_pct(m['router_cpt50']):>7} "
            f"{m['hybrid_apgr']:>12.3f} {_pct(m['hybrid_cpt50']):>7}  {extra}"
        )
    return 0


def _pct(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}%"


if __name__ == "__main__":
    raise SystemExit(main())
