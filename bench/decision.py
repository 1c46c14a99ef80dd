"""How long does the learned router take to decide, and to load? One command:

    python bench/decision.py [--config examples/learned.yaml] [--repeat 3] [--json out.json]

Pinned to one core. Measures, in this process:
  * ``load``: ``artefact.load_learned_router(config)`` — reading and checking the artefact, the 16 MB
    embedding table and the tokenizer, building the router (modules already imported; ``import`` is
    reported on its own);
  * ``choose``: ``LearnedRouter.choose(features)`` per request over real prompts — arena-bench-v1's 300,
    MT-Bench's 72 and 1,000 each of GSM8K and MMLU — ``repeat`` times in shuffled order, p50/p99/max;
  * ``decide``: the whole policy step the gateway runs, ``extract_features`` + ``PolicyEngine.decide``.
Targets: p99 of ``choose`` ≤ 1 ms, load ≤ 200 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "examples" / "learned.yaml"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    started = time.perf_counter()
    import numpy as np

    from tierwise.artefact import load_learned_router
    from tierwise.config import load_config
    from tierwise.evals.datasets import load_dataset
    from tierwise.features import extract_features
    from tierwise.policy.engine import PolicyEngine

    imported = time.perf_counter() - started
    config = load_config(args.config)
    loads = []
    for _ in range(3):
        t = time.perf_counter()
        router = load_learned_router(config)
        loads.append(time.perf_counter() - t)
    engine = PolicyEngine(config, learned=router)

    bodies = []
    for name, limit in (
        ("arena-bench-v1", None),
        ("routellm-mtbench", None),
        ("routellm-gsm8k", 1000),
        ("routellm-mmlu", 1000),
    ):
        prompts = load_dataset(name).prompts
        if limit is not None:
            prompts = random.Random(0).sample(list(prompts), limit)
        bodies.extend({"model": "auto", "messages": list(p.messages)} for p in prompts)
    features = [extract_features(body) for body in bodies]
    for f in features[:50]:  # warm up
        router.choose(f)

    order = list(range(len(features)))
    choose, decide = [], []
    for r in range(args.repeat):
        random.Random(r).shuffle(order)
        for i in order:
            t = time.perf_counter()
            router.choose(features[i])
            choose.append(time.perf_counter() - t)
            t = time.perf_counter()
            engine.decide(extract_features(bodies[i]))
            decide.append(time.perf_counter() - t)

    def stats(values: list[float]) -> dict[str, float]:
        ms = np.asarray(values) * 1000
        return {
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()),
        }

    chars = np.array([len(f.text) for f in features])
    out = {
        "config": args.config,
        "router": router.version,
        "models": list(router.models),
        "requests": len(features),
        "repeat": args.repeat,
        "prompt_chars": {"p50": float(np.percentile(chars, 50)), "p99": float(np.percentile(chars, 99))},
        "import_s": imported,
        "load_ms": {"first": loads[0] * 1000, "best": min(loads) * 1000},
        "choose": stats(choose),
        "decide": stats(decide),
    }
    print(
        f"router {out['router']} over {len(router.models)} models, "
        f"{len(features)} real prompts × {args.repeat}"
    )
    print(
        f"load     first {out['load_ms']['first']:.0f} ms, best {out['load_ms']['best']:.0f} ms"
        "  (target ≤ 200 ms)"
    )
    print(
        f"choose   p50 {out['choose']['p50_ms']:.3f} ms  p99 {out['choose']['p99_ms']:.3f} ms  "
        f"max {out['choose']['max_ms']:.3f} ms  (target p99 ≤ 1 ms)"
    )
    print(
        f"decide   p50 {out['decide']['p50_ms']:.3f} ms  p99 {out['decide']['p99_ms']:.3f} ms"
        "  (features + engine)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
