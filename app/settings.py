"""Where the app finds its catalog and model.

Each setting comes from (first match wins):
  1. a command-line argument after `--`:
         streamlit run app/main.py -- --catalog catalogs/my-shop --model models/my-shop.pt
  2. an environment variable: COINSP_CATALOG, COINSP_MODEL, COINSP_CATALOGS_DIR, COINSP_DEVICE
  3. the default: catalogs/fashion-mnist-test, models/coinsp-fmnist.pt, catalogs/, cpu

Relative paths are taken from the directory the app is started in.
`catalogs_dir` is the folder whose sub-folders the Quality page offers for comparing models.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CATALOG = "catalogs/fashion-mnist-test"
DEFAULT_MODEL = "models/coinsp-fmnist.pt"
DEFAULT_CATALOGS_DIR = "catalogs"
DEFAULT_DEVICE = "cpu"

ENV = {
    "catalog": "COINSP_CATALOG",
    "model": "COINSP_MODEL",
    "catalogs_dir": "COINSP_CATALOGS_DIR",
    "device": "COINSP_DEVICE",
}


@dataclass(frozen=True)
class Settings:
    catalog: Path  # the catalog folder the Search and Catalog pages serve
    model: Path  # the model checkpoint that catalog was built with
    catalogs_dir: Path  # the folder holding all catalogs (Quality page: compare two)
    device: str = DEFAULT_DEVICE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamlit run app/main.py --", allow_abbrev=False, add_help=False)
    parser.add_argument("--catalog", help=f"catalog folder (env {ENV['catalog']}, default {DEFAULT_CATALOG})")
    parser.add_argument("--model", help=f"model checkpoint (env {ENV['model']}, default {DEFAULT_MODEL})")
    parser.add_argument("--catalogs-dir", dest="catalogs_dir",
                        help=f"folder of catalogs to compare (env {ENV['catalogs_dir']}, "
                             f"default {DEFAULT_CATALOGS_DIR})")
    parser.add_argument("--device", help=f"torch device (env {ENV['device']}, default {DEFAULT_DEVICE})")
    return parser


def load_settings(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read the settings; unknown arguments (pytest's, Streamlit's) are ignored."""
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    try:
        args, _ = _parser().parse_known_args(argv)
        cli = vars(args)
    except SystemExit:  # a flag without its value: fall back to env/defaults rather than killing the app
        cli = {}

    def pick(name: str, default: str) -> str:
        return cli.get(name) or environ.get(ENV[name]) or default

    catalog = Path(pick("catalog", DEFAULT_CATALOG)).expanduser()
    catalogs_dir_value = cli.get("catalogs_dir") or environ.get(ENV["catalogs_dir"])
    # A catalog given explicitly usually sits next to its siblings: compare within its folder.
    catalogs_dir = Path(catalogs_dir_value).expanduser() if catalogs_dir_value else (
        catalog.parent if (cli.get("catalog") or environ.get(ENV["catalog"])) else Path(DEFAULT_CATALOGS_DIR))
    return Settings(
        catalog=catalog.absolute(),
        model=Path(pick("model", DEFAULT_MODEL)).expanduser().absolute(),
        catalogs_dir=catalogs_dir.absolute(),
        device=pick("device", DEFAULT_DEVICE),
    )
