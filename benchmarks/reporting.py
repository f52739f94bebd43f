"""A benchmark's report: the figures as JSON beside the Markdown a person reads, printed as well."""
from __future__ import annotations

import json
from pathlib import Path


def write_report(folder: Path, stem: str, result, markdown: str) -> None:
    """folder/stem.json and folder/stem.md (the folder made if needed); the Markdown also printed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (folder / f"{stem}.md").write_text(markdown + "\n")
    print(markdown)
