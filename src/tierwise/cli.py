"""The ``tierwise`` command: serve, route --explain, report."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import gc
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from .errors import ConfigError, TierwiseError

if TYPE_CHECKING:  # the commands import what they need when they run: `tierwise --help` stays fast
    from .config import Config
    from .evals.records import EvalDataset


def _serve(args: argparse.Namespace) -> int:
    from .gateway import server
    from .gateway.app import create_app
    from .ledger import safe_url
    from .router import Router

    router = Router.from_config(args.config)
    access = router.config.server.access_log
    if access != "off":  # one JSON line per request on stderr, beside the warnings, a batch at a time
        from .access_log import StreamAccessLog

        router.access_log = StreamAccessLog(sys.stderr, access)
    if router.config.server.tracing:
        from . import tracing

        tracing.install_sdk()  # exporter from OTEL_* environment variables; spans flushed at exit
        atexit.register(tracing.shutdown)
    app = create_app(router, shutdown_timeout=args.shutdown_timeout)
    loop_factory = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # uvloop is an optional speed-up
        pass
    print(
        f"tierwise serving {len(router.config.models)} models on http://{args.host}:{args.port}/v1 "
        f"(policy {router.policy_version}, ledger {safe_url(router.config.storage.ledger)})",
        flush=True,
    )
    runner_loop = loop_factory() if loop_factory else asyncio.new_event_loop()
    asyncio.set_event_loop(runner_loop)
    # A request allocates a few hundred objects, nearly all freed by reference counting; at the default
    # threshold (700 allocations) the cyclic collector ran every few requests, for ~5% of the CPU at
    # c=10 (bench/overhead.py's load). The process is the gateway's alone: cyclic garbage may wait for
    # 10,000 allocations (50,000 saved no more).
    gc.set_threshold(10_000, 50, 100)
    # Stops on SIGINT/SIGTERM, lets in-flight requests finish, then runs on_cleanup, which flushes the
    # ledger: a graceful stop loses no row.
    server.run(app, host=args.host, port=args.port, shutdown_timeout=args.shutdown_timeout, loop=runner_loop)
    return 0


def _route(args: argparse.Namespace) -> int:
    from .config import load_config
    from .engines import load_engine
    from .features import extract_features, parse_hints
    from .providers.base import UpstreamCall
    from .validation import validate_chat_body

    config = load_config(args.config)
    engine = load_engine(config)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt.strip():
        raise ConfigError("route: no prompt; give it as an argument or on standard input")
    body = {"model": args.model, "messages": [{"role": "user", "content": prompt}]}
    if args.system:
        body["messages"].insert(0, {"role": "system", "content": args.system})
    if args.max_tokens:
        body["max_tokens"] = args.max_tokens
    validate_chat_body(body, config.server)
    headers = {
        f"x-tierwise-{k}": str(v)
        for k, v in (
            ("task", args.task),
            ("quality", args.quality),
            ("latency-ms", args.latency_ms),
            ("risk", args.risk),
            ("tier", args.tier),
        )
        if v is not None
    }
    features = extract_features(body, parse_hints(headers, None))
    decision = engine.decide(features, model=args.model)
    # The gateway asks the classifier only where the default decided; --explain calls nothing.
    classifier = config.policy.classifier
    asks = classifier.model if classifier is not None and decision.layer == "default" else None
    first = config.model(decision.chain[0])
    # What the first model would receive, its prompt template applied as the adapter layer does.
    sent = UpstreamCall(first, body).body["messages"]
    if args.json:
        shown = {
            "features": features.to_log(),
            "decision": decision.to_log(),
            "classifier_asked": asks,
            "template": first.template_id,
            "upstream_messages": sent,
        }
        print(json.dumps(shown, indent=2))
        return 0
    print(
        f"model    {first.name}  (tier {decision.tier}, ${first.price.input_per_mtok}/"
        f"${first.price.output_per_mtok} per M tokens)"
    )
    print(f"chain    {' → '.join(decision.chain)}")
    print(f"reason   {decision.reason}")
    print(f"layer    {decision.layer}  (policy {decision.policy_version})")
    if decision.cascade:
        cascade = config.policy.cascade
        assert cascade is not None
        names = ", ".join(v.name or v.kind for v in cascade.verifiers)
        print(f"cascade  {first.name}'s answer is verified ({names}) before it is returned")
    if asks is not None:
        print(f"classify {asks} would be asked which tier this needs (not asked here); the above if it fails")
    shown = {k: v for k, v in features.to_log().items() if v not in (None, False)}
    print("features " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    if first.template is not None:
        print(f"template {first.template_id}: {first.name} receives")
        for message in sent:
            print(f"  {message['role']}: {json.dumps(message['content'], ensure_ascii=False)[:400]}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .config import load_config
    from .ledger import open_ledger
    from .report import render, summarize

    url = args.ledger or load_config(args.config).storage.ledger

    async def fetch() -> tuple[list, list]:
        ledger = open_ledger(url)
        await ledger.start()
        try:
            return await ledger.fetch(since=args.since), await ledger.fetch_feedback(since=args.since)
        finally:
            await ledger.close()

    rows, feedback = asyncio.run(fetch())
    if args.until is not None:
        rows = [row for row in rows if row.ts < args.until]
        feedback = [item for item in feedback if item.ts < args.until]
    summary = summarize(rows, feedback)
    print(json.dumps(summary, indent=2) if args.json else render(summary))
    return 0


@contextlib.contextmanager
def _progress_bar(total: int) -> Iterator[Callable[[str], None] | None]:
    """A progress bar on stderr when it is a terminal and rich is installed; otherwise nothing."""
    from .progress import stderr_progress

    with stderr_progress() as bar:
        if bar is None:
            yield None
            return
        task = bar.add_task("evaluating", total=total)
        yield lambda message: bar.update(task, advance=1, description=message)


def _eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .evals.baselines import BASELINES
    from .evals.datasets import load_dataset
    from .evals.fleet import default_fleet
    from .evals.output import render_table, write_json, write_plot
    from .evals.policies import make_policy
    from .evals.run import evaluate, steps
    from .evals.splits import group_folds, kfold
    from .messages import message_text

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(args.data, data_dir=args.data_dir)
    specs = args.policy or ["rules"]
    first = make_policy(specs[0], dataset, seed=args.seed)
    fleet = first.fleet(dataset) if specs[0] not in ("random", "oracle") else default_fleet(dataset)
    policies = [first] + [make_policy(spec, dataset, default=fleet, seed=args.seed) for spec in specs[1:]]
    train_sets = [
        load_dataset(n, data_dir=args.data_dir) for v in args.train_data or () for n in v.split(",") if n
    ]
    for policy in policies:
        if hasattr(policy, "train_sets"):  # the learned router: extra training sets (--train-data)
            policy.train_sets = train_sets
            if args.families:
                policy.candidates = _candidates(args.families)
    folds = None
    if args.cv:
        texts = [message_text(p.messages[-1]) for p in dataset.prompts]
        if args.split in ("category", "subject"):
            folds = group_folds(texts, [p.category for p in dataset.prompts], args.cv, seed=args.seed)
        else:
            folds = kfold(texts, args.cv, seed=args.seed)

    split = f"{args.cv}-fold {args.split}" if args.cv else "none"
    n_policies = len(policies) - sum(p.name in BASELINES for p in policies)
    with _progress_bar(steps(n_policies, folds, models=len(fleet.models))) as progress:
        report = evaluate(
            dataset,
            policies,
            fleet=fleet,
            seed=args.seed,
            n_boot=args.bootstrap,
            folds=folds,
            split=split,
            progress=progress,
        )
    print(render_table(report))
    write_json(report, out / "report.json")
    problem = None if args.no_plot else write_plot(report, out / "curve.png")
    written = "report.json" + ("" if args.no_plot or problem else ", curve.png")
    print(f"wrote {written} to {out} in {report.meta['elapsed_s']:.2f} s")
    if problem:
        print(f"no plot: {problem}", file=sys.stderr)
    return 0


def _ledger_training_set(args: argparse.Namespace, config: Config | None) -> EvalDataset:
    """The labelled prompts of a ledger (``evals/ledger_data.py``), with what was found said on stderr."""
    from .evals.ledger_data import load_ledger_dataset
    from .ledger import safe_url

    if args.ledger == "config":
        if config is None:
            raise ConfigError("tierwise train: --ledger without a URL reads the --config's storage.ledger")
        url = config.storage.ledger
    else:
        url = args.ledger
    if config is None:
        raise ConfigError("tierwise train: --ledger needs --config: the ledger names the fleet's models")
    dataset, counts = asyncio.run(load_ledger_dataset(url, since=args.since))
    print(f"  {safe_url(url)}: {counts.describe()}", file=sys.stderr, flush=True)
    if not len(dataset):
        hint = (
            "turn on storage.capture_prompts so rows keep their prompt"
            if counts.with_prompt == 0
            else "send feedback (POST /v1/feedback) or configure a cascade, so answers get labels"
        )
        raise ConfigError(f"tierwise train: the ledger has no labelled prompt to train on: {hint}")
    return dataset


def _candidates(families: str, router: str = "gap") -> tuple:
    """The learned router's candidates of the named families (``--families linear,knn``)."""
    if router == "utility":
        from .train_utility import CANDIDATES
    else:
        from .train import CANDIDATES

    wanted = {f.strip() for f in families.split(",")}
    candidates = tuple(c for c in CANDIDATES if c[0] in wanted)
    if not candidates:
        known = ", ".join(dict.fromkeys(c[0] for c in CANDIDATES))
        raise ValueError(f"--families {families!r}: none of {known}")
    return candidates


def _train(args: argparse.Namespace) -> int:
    import time

    from .artefact import write_artefact
    from .config import load_config
    from .embeddings import load_wordllama
    from .evals.datasets import load_dataset
    from .evals.fleet import default_fleet
    from .train import CANDIDATES, FleetModel, train_router

    names = [n for value in args.data or () for n in value.split(",") if n]
    if not names and not args.ledger:
        raise ConfigError("tierwise train: give training data: --data NAME_OR_PATH and/or --ledger [URL]")
    datasets = [load_dataset(n, data_dir=args.data_dir) for n in names]
    config = load_config(args.config) if args.config else None
    if args.ledger:
        datasets.append(_ledger_training_set(args, config))
    if config is not None:
        models = [
            FleetModel(m.name, m.price.input_per_mtok, m.price.output_per_mtok, m.upstream)
            for m in config.models
        ]
        reference = config.counterfactual().name
    else:
        fleet = default_fleet(datasets[0])
        models = [
            FleetModel(m.name, m.price.input_per_mtok, m.price.output_per_mtok, upstream)
            for m, upstream in zip(fleet.models, fleet.dataset_models, strict=True)
        ]
        reference = fleet.models[fleet.strongest].name
    router = args.router
    if router == "utility":
        from .train_utility import CANDIDATES as UTILITY_CANDIDATES

        candidates = _candidates(args.families, router) if args.families else UTILITY_CANDIDATES
    else:
        candidates = _candidates(args.families) if args.families else CANDIDATES
    target = {
        k: v
        for k, v in (
            ("strong_share", args.strong_share),
            ("budget_per_1k_usd", args.budget_per_1k_usd),
            ("quality_floor", args.quality_floor),
        )
        if v is not None
    } or None
    started = time.perf_counter()
    embedder = load_wordllama()
    if router == "utility":
        from .train_utility import train_utility_router as fit
    else:
        fit = train_router
    trained = fit(
        datasets,
        models,
        reference=reference,
        embedder=embedder,
        candidates=candidates,
        inner_folds=args.inner_folds,
        seed=args.seed,
        default_target=target,
        progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True),
    )
    if router != "utility" and config is not None and config.policy.cascade is not None:
        from .evals.hybrid import recalibrate_for_hybrid

        target = trained.meta["default_target"]
        if recalibrate_for_hybrid(trained, datasets, config, target, embedder):
            print(
                "  calibrated as the hybrid: the config's cascade replayed on the recorded answers",
                file=sys.stderr,
            )
    path = write_artefact(args.out, trained.meta, trained.arrays)
    meta = trained.meta
    if router == "utility":
        chosen = (
            f"utility {meta['family']} {meta['params']}, {meta['training']['rows']} prompts, "
            f"out-of-fold AIQ {meta['metrics']['chosen_oof_aiq']:.3f}, "
            f"λ {meta['default_cost_weight']:.4g} for {meta['default_target']}"
        )
    else:
        chosen = (
            f"{meta['family']} {meta['params']}, {meta['training']['rows']} prompts, "
            f"out-of-fold APGR {meta['metrics']['chosen_oof_apgr']:.3f}, "
            f"threshold {meta['default_threshold']:.4f} for {meta['default_target']}"
        )
    took = time.perf_counter() - started
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) in {took:.1f} s: {chosen}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tierwise", description="Route LLM requests to the cheapest capable model."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the OpenAI-compatible gateway")
    serve.add_argument("--config", required=True, help="YAML configuration file")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--shutdown-timeout", type=float, default=30.0, help="seconds to drain in-flight requests"
    )
    serve.set_defaults(run=_serve)

    route = commands.add_parser("route", help="show where a prompt would go and why (calls nothing)")
    route.add_argument("--config", required=True)
    route.add_argument(
        "prompt",
        nargs="?",
        default="-",
        metavar="PROMPT",
        help="the prompt to route; '-' or none reads it from standard input",
    )
    # Routing is always explained: the flag stays so that `route --explain "…"` keeps working.
    route.add_argument("--explain", action="store_true", help=argparse.SUPPRESS)
    route.add_argument("--model", default="auto")
    route.add_argument("--task")
    route.add_argument("--quality")
    route.add_argument("--latency-ms", type=int)
    route.add_argument("--risk")
    route.add_argument("--tier")
    route.add_argument("--max-tokens", type=int)
    route.add_argument("--system", help="a system prompt, to see what the model's template makes of it")
    route.add_argument("--json", action="store_true")
    route.set_defaults(run=_route)

    report = commands.add_parser("report", help="summarize the ledger: cost, shares, fallbacks, savings")
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="read the ledger URL from this config")
    source.add_argument("--ledger", help="ledger URL, e.g. sqlite:///./tierwise.db")
    report.add_argument("--since", type=float, help="only rows at or after this unix time")
    report.add_argument("--until", type=float, help="only rows before this unix time")
    report.add_argument("--json", action="store_true")
    report.set_defaults(run=_report)
    evaluate = commands.add_parser("eval", help="replay policies on real multi-model data: cost vs quality")
    evaluate.add_argument(
        "--data",
        required=True,
        metavar="NAME_OR_PATH",
        help="routellm-mmlu, routellm-gsm8k, routellm-mtbench, arena-bench-v1, or a file "
        "in the generic format (JSONL/CSV/Parquet)",
    )
    evaluate.add_argument("--data-dir", help="read the named datasets' original files from here")
    evaluate.add_argument(
        "--policy",
        action="append",
        metavar="NAME_OR_CONFIG",
        help="rules (the default playbook), random, oracle, always-cheapest, always-strongest, "
        "or a config YAML; repeatable. Baselines are always included.",
    )
    evaluate.add_argument("--out", required=True, help="directory for report.json and curve.png")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs (0: none)"
    )
    evaluate.add_argument("--cv", type=int, default=0, metavar="K", help="report the mean over K test folds")
    evaluate.add_argument(
        "--split",
        choices=("random", "category", "subject"),
        default="random",
        help="with --cv: random folds, or whole categories (subject: the same, MMLU subjects) held out",
    )
    evaluate.add_argument(
        "--families", help="--policy learned: model families to select among (linear, knn, mlp); default: all"
    )
    evaluate.add_argument(
        "--train-data",
        action="append",
        metavar="NAME_OR_PATH[,…]",
        help="--policy learned: also train on these datasets (repeatable or a comma list); prompts whose "
        "text is in the test set are left out",
    )
    evaluate.add_argument("--no-plot", action="store_true")
    evaluate.set_defaults(run=_eval)

    train = commands.add_parser("train", help="train a learned-router artefact from labelled prompts")
    train.add_argument(
        "--data",
        action="append",
        metavar="NAME_OR_PATH[,…]",
        help="training datasets: a load_dataset name or a generic-format file; repeatable or a comma list",
    )
    train.add_argument(
        "--ledger",
        nargs="?",
        const="config",
        metavar="URL",
        help="also train on the gateway's own traffic: ledger rows with their prompt "
        "(storage.capture_prompts) joined with feedback and cascade verdicts; without URL, the "
        "--config's storage.ledger",
    )
    train.add_argument("--since", type=float, help="with --ledger: only rows at or after this unix time")
    train.add_argument("--data-dir", help="read the named datasets' original files from here")
    train.add_argument(
        "--config",
        help="the fleet to route (models' upstream ids name dataset models); default: the "
        "first dataset's default fleet",
    )
    train.add_argument("--out", required=True, help="the artefact file to write (.npz)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--inner-folds", type=int, default=3, help="CV folds for selection and calibration")
    train.add_argument(
        "--router",
        choices=("gap", "utility"),
        default="gap",
        help="gap: the cheapest model whose predicted quality is within a threshold of the strongest's; "
        "utility: the model maximising predicted quality − λ·predicted cost (default: gap)",
    )
    train.add_argument(
        "--families",
        help="comma list of model families to consider (gap: linear, knn, mlp; utility: ridge, knn, "
        "cluster, mf, blend, ensemble); default: all",
    )
    target = train.add_mutually_exclusive_group()
    target.add_argument("--strong-share", type=float, help="default operating point: share to the strongest")
    target.add_argument(
        "--budget-per-1k-usd", type=float, help="default operating point: USD per 1k requests"
    )
    target.add_argument(
        "--quality-floor", type=float, help="default operating point: share of strongest quality (0.95)"
    )
    train.set_defaults(run=_train)

    from .estimate.command import add_estimate_parser  # argparse only: `tierwise --help` stays fast

    add_estimate_parser(commands)
    from .keys_command import add_keys_parser

    add_keys_parser(commands)
    from .canary_command import add_canary_parser

    add_canary_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args))
    except ConfigError as exc:
        print(f"tierwise: configuration error: {exc}", file=sys.stderr)
        return 2
    except TierwiseError as exc:
        print(f"tierwise: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # bad command-line values found past argparse (e.g. an unknown policy)
        print(f"tierwise: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
