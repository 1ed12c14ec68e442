"""The README's promises: two commands first, and CI runs the test command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def first_code_block() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M)
    assert block, "README has no code block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_first_block_is_run_then_test():
    lines = first_code_block()
    assert len(lines) == 2
    run, test = lines
    assert run.startswith("pip install torch==2.13.0") and run.endswith("python app.py")
    assert test.startswith("pip install torch==2.13.0") and "pytest" in test


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert first_code_block()[1] in ci.splitlines()


def test_readme_documents_every_cli_option():
    from pipelines.cli import build_parser

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    options = {opt for action in build_parser()._actions for opt in action.option_strings
               if opt.startswith("--") and opt != "--help"}
    missing = sorted(opt for opt in options if opt not in readme)
    assert missing == [], f"README does not mention: {missing}"
