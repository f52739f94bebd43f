"""Every `python -m ...` command that README.md and docs/ show still exists: its --help works."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# `python -m module [subcommand]`; a subcommand is a plain word (not an option, path or value);
# `python -m benchmarks.<name>` is a pattern, not a command.
COMMAND = re.compile(r"python -m ([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?!\w|\.<)(?: ([a-z][a-z0-9-]*)(?=[\s`]|$))?",
                     re.MULTILINE)
# Runs `python -m MODULE [SUBCOMMAND] --help` for each given subcommand ("" for none) in one
# process, so the module's imports are paid once; prints the exit status of each.
HELP_EACH = """
import runpy, sys
module, subcommands = sys.argv[1], sys.argv[2:]
for sub in subcommands:
    sys.argv = [module] + ([sub] if sub else []) + ["--help"]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit:
        code = exit.code or 0
    print(f"@@ {sub or '-'} {code}", flush=True)
"""


def documented_commands() -> dict[str, list[str]]:
    """module -> the subcommands the documents show ("" where the module itself is shown)."""
    found = defaultdict(set)
    for document in DOCUMENTS:
        for module, subcommand in COMMAND.findall(document.read_text()):
            found[module].add(subcommand)
    return {module: sorted(subs) for module, subs in sorted(found.items())}


def test_the_documents_name_commands():
    assert {"index", "training", "app.api", "benchmarks.catalog_bench", "benchmarks.loadtest"} <= set(documented_commands())


@pytest.mark.parametrize("module, subcommands", documented_commands().items(), ids=str)
def test_documented_commands_answer_help(module, subcommands):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", HELP_EACH, module, *subcommands], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    statuses = dict(line.split()[1:] for line in done.stdout.splitlines() if line.startswith("@@ "))
    assert statuses == {sub or "-": "0" for sub in subcommands}, done.stderr[-2000:]
    assert "usage:" in done.stdout.lower()
