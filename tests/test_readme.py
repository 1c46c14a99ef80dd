"""The README's Python examples run, against the demo's replay fleet served on 127.0.0.1."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.fakes.upstream import free_port

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.fixture(scope="module")
def demo_gateway(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    workdir = tmp_path_factory.mktemp("readme")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tierwise.cli",
            "serve",
            "--config",
            str(ROOT / "examples/demo.yaml"),
            "--port",
            str(port),
        ],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        yield port, workdir
    finally:
        proc.terminate()
        proc.wait(15)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(
    index: int,
    demo_gateway: tuple[int, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port, workdir = demo_gateway
    # Run where a user would, with the repository's examples/ beside it, so ledgers land in tmp.
    if not (workdir / "examples").exists():
        (workdir / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(workdir)
    code = BLOCKS[index].replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    exec(compile(code, f"README.md[python block {index}]", "exec"), {})
    out = capsys.readouterr().out
    assert out.strip(), "an example should print what it shows"
