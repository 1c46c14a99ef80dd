from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from tierwise.arena_data import BUILTIN, ArenaData, load_arena, parse_arena
from tierwise.errors import ConfigError

# the full upstream data: ../shared/data beside the repository, where the machine has it
SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "arena-bench-v1"

MODELS = {
    "claude-1", "claude-2.1", "claude-instant-1", "gpt-3.5-turbo", "gpt-3.5-turbo-1106", "gpt-4-0314",
    "gpt-4-1106-preview", "llama-13b", "Llama-2-70b-chat", "Mistral-7B-Instruct-v0.1",
    "Mixtral-8x7B-Instruct-v0.1", "openchat_3.5", "palm-2-chat-bison-001", "Starling-LM-7B-alpha",
    "vicuna-33b-v1.3",
}  # fmt: skip


@pytest.fixture(scope="module")
def arena() -> ArenaData:
    return load_arena()


def test_shipped_dataset_has_300_questions_and_15_models(arena: ArenaData) -> None:
    assert arena.source == BUILTIN
    assert len(arena.questions) == 300
    assert len({q.id for q in arena.questions}) == 300
    assert set(arena.models) == MODELS
    # vicuna-7b/13b-v1.5 have answers but no judgements: left out.
    assert "vicuna-7b-v1.5" not in arena.models and "vicuna-13b-v1.5" not in arena.models
    assert all(set(arena.results[q.id]) == MODELS for q in arena.questions)


def test_builtin_name_and_default_load_the_same_file(arena: ArenaData) -> None:
    assert load_arena(BUILTIN) == arena


# Mean GPT-4 judge grades as the source data's README states them (rounded to 2 decimals).
@pytest.mark.parametrize(
    ("model", "mean"),
    [
        ("gpt-4-1106-preview", 8.87),
        ("gpt-4-0314", 8.55),
        ("gpt-3.5-turbo-1106", 6.68),
        ("Mixtral-8x7B-Instruct-v0.1", 6.54),
        ("claude-2.1", 6.44),
        ("claude-instant-1", 6.19),
        ("Starling-LM-7B-alpha", 5.48),
        ("Llama-2-70b-chat", 4.35),
        ("Mistral-7B-Instruct-v0.1", 3.57),
    ],
)
def test_mean_scores_match_the_published_figures(arena: ArenaData, model: str, mean: float) -> None:
    assert arena.mean_score(model) == pytest.approx(mean, abs=0.006)


@pytest.mark.parametrize(
    ("model", "missing"),
    [
        ("gpt-4-1106-preview", 3),
        ("Mixtral-8x7B-Instruct-v0.1", 4),
        ("claude-instant-1", 0),
        ("palm-2-chat-bison-001", 6),
    ],
)
def test_unparsed_grades_are_missing_not_zero(arena: ArenaData, model: str, missing: int) -> None:
    scores = [arena.score(q.id, model) for q in arena.questions]
    assert scores.count(None) == missing
    assert all(s is None or 1 <= s <= 10 for s in scores)


def test_judge_any_file_is_llama_13b(arena: ArenaData) -> None:
    # arena-bench-judgment_judge_any.jsonl holds llama-13b's grades; they are the lowest of all.
    assert arena.mean_score("llama-13b") == pytest.approx(1.483, abs=0.001)


def test_token_counts_are_positive(arena: ArenaData) -> None:
    for question in arena.questions:
        assert question.input_tokens > 0
        for model in arena.models:
            answer = arena.answer(question.id, model)
            assert answer is not None
            input_tokens, output_tokens = arena.tokens(question.id, model)
            assert input_tokens == question.input_tokens
            # Every token is at least one byte; only an empty answer has no tokens.
            assert (output_tokens > 0) == bool(answer)
            assert output_tokens <= len(answer.encode())


def test_by_prompt_matches_after_stripping(arena: ArenaData) -> None:
    question = arena.questions[7]
    assert arena.by_prompt(question.prompt) == question.id
    assert arena.by_prompt(f"\n  {question.prompt.strip()} \n") == question.id
    assert arena.by_prompt(question.prompt + " and one more thing") is None
    assert arena.question(question.id) == question


def test_unknown_lookups(arena: ArenaData) -> None:
    qid = arena.questions[0].id
    assert arena.answer(qid, "gpt-5") is None
    assert arena.score("no-such-question", "claude-1") is None
    assert arena.mean_score("gpt-5") is None
    with pytest.raises(KeyError, match="gpt-5"):
        arena.tokens(qid, "gpt-5")
    with pytest.raises(KeyError, match="no question"):
        arena.question("no-such-question")


def test_dataset_is_immutable(arena: ArenaData) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        arena.models = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        arena.questions[0].prompt = "changed"  # type: ignore[misc]


def _source_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.skipif(not SOURCE.is_dir(), reason="the full source data is not on this machine")
@pytest.mark.parametrize(
    ("model", "answer_file", "judgment_file"),
    [
        ("gpt-4-1106-preview", "gpt-4-1106-preview", "gpt-4-turbo"),  # the judgement file is misnamed
        ("llama-13b", "llama-13b", "arena-bench-judgment_judge_any"),
        ("Mixtral-8x7B-Instruct-v0.1", "Mixtral-8x7B-Instruct-v0.1", "Mixtral-8x7B-Instruct-v0.1"),
        ("gpt-3.5-turbo", "gpt-3.5-turbo", "gpt-3.5-turbo"),  # float scores in the source
    ],
)
def test_matches_the_source_files(arena: ArenaData, model: str, answer_file: str, judgment_file: str) -> None:
    prompts = {row["question_id"]: row["turns"][0] for row in _source_rows(SOURCE / "question.jsonl")}
    assert {q.id: q.prompt for q in arena.questions} == prompts
    for row in _source_rows(SOURCE / "model_answer" / f"{answer_file}.jsonl"):
        assert arena.answer(row["question_id"], model) == row["choices"][0]["turns"][0]
    for row in _source_rows(SOURCE / "model_judgment" / f"{judgment_file}.jsonl"):
        assert row["model"].rsplit("/", 1)[-1] == model
        expected = None if row["score"] is None else float(row["score"])
        assert arena.score(row["question_id"], model) == expected


# -- other files of the same format ------------------------------------------------------------------


def _row(qid: str = "q1", prompt: str = "Say hi", **models: dict[str, Any]) -> dict[str, Any]:
    entries = models or {"m": {"answer": "hi", "score": 7, "output_tokens": 1}}
    return {"question_id": qid, "prompt": prompt, "input_tokens": 2, "models": entries}


def _write(path: Path, lines: list[Any], *, compress: bool = False) -> Path:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_bytes(gzip.compress(text.encode()) if compress else text.encode())
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_loads_a_custom_file(tmp_path: Path, compress: bool) -> None:
    rows = [
        _row("q1", "Say hi\u2028there", m={"answer": "hi", "score": 7, "output_tokens": 1}),  # U+2028 stays
        "",
        _row(
            "q2",
            "Add",
            m={"answer": None, "score": None, "output_tokens": 3},
            n={"answer": "", "score": 1.5, "output_tokens": 0},
        ),
    ]
    data = load_arena(_write(tmp_path / "custom.jsonl", rows, compress=compress))
    assert [q.id for q in data.questions] == ["q1", "q2"]
    assert data.models == ("m", "n")
    assert data.by_prompt("Say hi\u2028there") == "q1"
    assert data.answer("q2", "m") is None  # trimmed
    assert data.answer("q2", "n") == ""  # recorded empty answer
    assert data.score("q1", "m") == 7.0 and isinstance(data.score("q1", "m"), float)
    assert data.score("q2", "m") is None
    assert data.tokens("q2", "m") == (2, 3)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: not valid JSON"),
        ("[1, 2]", "line 2: expected a JSON object, got list"),
        ({"prompt": "x", "input_tokens": 1, "models": {}}, "line 2: question_id: required"),
        (_row(qid=""), "line 2: question_id: must be a non-empty string"),
        ({**_row("q2"), "prompt": 3}, "line 2: prompt: must be a string"),
        ({**_row("q2"), "input_tokens": -1}, "line 2: input_tokens: must be an integer ≥ 0, got -1"),
        ({**_row("q2"), "input_tokens": True}, "line 2: input_tokens: must be an integer ≥ 0, got True"),
        ({**_row("q2"), "models": []}, "line 2: models: must be an object"),
        (_row("q2", m="x"), "line 2: models.m: must be an object"),  # type: ignore[arg-type]
        (_row("q2", m={"score": 1, "output_tokens": 1}), "line 2: models.m: answer: required"),
        (
            _row("q2", m={"answer": 1, "score": 1, "output_tokens": 1}),
            "line 2: models.m.answer: must be a string",
        ),
        (
            _row("q2", m={"answer": "a", "score": "9", "output_tokens": 1}),
            "models.m.score: must be a number or null",
        ),
        (
            _row("q2", m={"answer": "a", "score": True, "output_tokens": 1}),
            "models.m.score: must be a number",
        ),
        (
            _row("q2", m={"answer": "a", "score": 1, "output_tokens": 1.5}),
            "models.m.output_tokens: must be an int",
        ),
        (_row("q1"), "line 2: question_id 'q1' appears twice"),
    ],
)
def test_malformed_lines_name_the_line_and_the_field(tmp_path: Path, line: Any, message: str) -> None:
    path = _write(tmp_path / "bad.jsonl", [_row("q1"), line])
    with pytest.raises(ConfigError, match="line 2") as info:
        load_arena(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_unreadable_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the dataset: No such file"):
        load_arena(tmp_path / "missing.jsonl.gz")
    with pytest.raises(ConfigError, match="holds no questions"):
        load_arena(_write(tmp_path / "empty.jsonl", ["", "  "]))
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(json.dumps(_row()).encode())[:-6])
    with pytest.raises(ConfigError, match="not a valid gzip file"):
        load_arena(broken)
    with pytest.raises(ConfigError, match="raw: line 1: not valid JSON"):
        parse_arena(b"\xff\xfe\n", source="raw")
