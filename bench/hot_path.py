"""What each step of tierwise's own per-request work costs, in process, without HTTP. One command:

    python bench/hot_path.py [--repeat N] [--json out.json]

On ``bench/overhead.py``'s request bodies and fleet (the built-in rules, ``storage.ledger: none``), it
times each step the Router and the gateway run for a non-streamed request: validation, routing hints,
feature extraction, the policy, the ledger row, the metrics, the access-log line (as ``tierwise serve``
writes it, to an in-memory stream), the response headers. Each
step runs ``--repeat`` times over the 256 bodies; the figure is CPU time (``time.process_time``) per
call in µs, the best of 5 passes (noise only ever adds time). Prints a table and one JSON summary.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from multidict import CIMultiDict

from overhead import BODIES, HEADERS, KEY, tierwise_config
from tierwise.access_log import StreamAccessLog
from tierwise.calls import Outcome, request_row
from tierwise.features import extract_features, parse_hints
from tierwise.gateway.responses import tierwise_headers
from tierwise.metrics import Metrics
from tierwise.providers.base import Usage
from tierwise.router import Router
from tierwise.validation import validate_chat_body

PASSES = 5


def per_call_us(step: Callable[[Any], Any], inputs: list[Any], repeat: int) -> float:
    """CPU µs per call of ``step`` over ``inputs``, the best of ``PASSES`` passes."""
    best = float("inf")
    calls = repeat * len(inputs)
    for _ in range(PASSES):
        started = time.process_time()
        for _ in range(repeat):
            for item in inputs:
                step(item)
        best = min(best, time.process_time() - started)
    return round(best / calls * 1e6, 2)


def measure(repeat: int) -> dict[str, float]:
    os.environ.setdefault("TIERWISE_BENCH_KEY", KEY)
    with tempfile.TemporaryDirectory(prefix="tierwise-hot-path-") as tmp:
        config = Path(tmp) / "tierwise.yaml"
        config.write_bytes(orjson.dumps(tierwise_config("http://127.0.0.1:9/v1", "none")))
        router = Router.from_config(config)
    limits = router.config.server
    bodies = [orjson.loads(body) for body in BODIES]
    headers = CIMultiDict(HEADERS)
    features = [extract_features(body, {}) for body in bodies]
    decisions = [router.engine.decide(f, model="auto") for f in features]
    model = router.config.models[0]

    def row(i: int) -> Any:
        outcome = Outcome(model=model, usage=Usage(70, 1), status="ok")
        return request_row(
            outcome,
            id="req_0123456789abcdef01234567",
            arrived=time.time(),
            started=time.perf_counter(),
            requested_model="auto",
            stream=False,
            features=features[i].to_log(),
            decision=decisions[i].to_log(),
            policy_version=decisions[i].policy_version,
            http_status=200,
            error=None,
            counterfactual=router.config.counterfactual(),
        )

    rows = [row(i) for i in range(len(bodies))]
    metrics = Metrics()
    # The access log as `tierwise serve` writes it, to an in-memory stream. Outside a loop each line
    # is written at once, which is the dearest case: in the gateway a batch shares one write.
    stream = io.StringIO()
    access = StreamAccessLog(stream, "info")

    def log_line(r: Any) -> None:
        access.write(r)
        stream.seek(0)
        stream.truncate()

    indices = list(range(len(bodies)))
    return {
        "parse body (orjson)": per_call_us(orjson.loads, list(BODIES), repeat),
        "validate": per_call_us(lambda b: validate_chat_body(b, limits), bodies, repeat),
        "routing hints": per_call_us(lambda b: parse_hints(headers, b.get("metadata")), bodies, repeat),
        "features": per_call_us(lambda b: extract_features(b, {}), bodies, repeat),
        "policy": per_call_us(lambda f: router.engine.decide(f, model="auto"), features, repeat),
        "ledger row": per_call_us(row, indices, repeat),
        "metrics": per_call_us(metrics.observe, rows, repeat),
        "access-log line": per_call_us(log_line, rows, repeat),
        "response headers": per_call_us(
            lambda d: tierwise_headers(
                model="draft-1", tier="draft", decision=d, request_id="req_0", cost_usd=1e-5
            ),
            decisions,
            repeat,
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="passes over the 256 bodies per timing")
    parser.add_argument("--json", metavar="PATH", help="also write the summary to this file")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be ≥ 1")
    steps = measure(args.repeat)
    width = max(map(len, steps))
    for name, us in steps.items():
        print(f"{name:<{width}}  {us:8.2f} µs")
    print(f"{'total':<{width}}  {sum(steps.values()):8.2f} µs")
    summary = {"unit": "CPU µs per call", "repeat": args.repeat, "steps": steps, "total": sum(steps.values())}
    print(orjson.dumps(summary).decode())
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
