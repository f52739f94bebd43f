"""Where the app finds its catalog and model.

Each setting comes from (first match wins):
  1. a command-line argument after `--`:
         streamlit run app/main.py -- --catalog catalogs/my-shop --model models/my-shop.pt
  2. an environment variable: COINSP_CATALOG, COINSP_MODEL, COINSP_CATALOGS_DIR, COINSP_DEVICE
  3. the default: catalogs/fashion-mnist-test, models/coinsp-fmnist.pt, catalogs/, cpu

Relative paths are taken from the directory the app is started in.
`catalogs_dir` is the folder whose sub-folders the Quality page offers for comparing models.

Catalog management (the Catalog page's add, remove, rebuild and build) is a role:
  - it is on only when COINSP_ADMIN_TOKEN is set in the server's environment and the person
    enters that token on the Catalog page (compared in constant time); without the variable the
    app serves search only. `./run.sh` makes a one-time token when it serves on a loopback
    address and prints it; on any other address it makes none.
  - a weak token is refused, with the reason (`token_weakness`): under 16 characters, under 8
    different characters, or under 72 bits by the characters' own frequencies (`aaaaaaaaaaaaaaaa`,
    `password12345678`); `secrets.token_urlsafe(24)` (run.sh's) and `openssl rand -hex 16` pass.
  - wrong tokens are slowed down per client address (app/sign_in_backoff.py), and the sign-in warns
    when the page is reached over plain HTTP from another machine (`plain_http_problem`).
  - every folder or manifest the Catalog page accepts must lie inside the data root,
    COINSP_DATA_ROOT (default: the repository's data/ folder, where the importers write);
    anything else is refused before it is read or written.

The server's own settings (listen address, port, 20 MB upload cap) are Streamlit options. Streamlit
reads `.streamlit/config.toml` from the folder it is started in only, so the app checks them at
every run and refuses to serve when they are missing (`server_settings_problem`).
"""
from __future__ import annotations

import argparse
import hmac
import ipaddress
import math
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CATALOG = "catalogs/fashion-mnist-test"
DEFAULT_MODEL = "models/coinsp-fmnist.pt"
DEFAULT_CATALOGS_DIR = "catalogs"
DEFAULT_DEVICE = "cpu"
REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPOSITORY / "data"
ADMIN_TOKEN_ENV = "COINSP_ADMIN_TOKEN"
MIN_ADMIN_TOKEN_LENGTH = 16  # characters: a guessable password would make the role decorative
MIN_ADMIN_TOKEN_DISTINCT = 8  # different characters
MIN_ADMIN_TOKEN_BITS = 72  # length x the entropy of its own character frequencies
MAX_UPLOAD_MB = 20  # the app's upload cap (server.maxUploadSize); the decoder itself refuses over 50 MB
START_COMMAND = (f"./run.sh, or: streamlit run app/main.py --server.address 127.0.0.1 --server.port 8501 "
                 f"--server.maxUploadSize {MAX_UPLOAD_MB}")

ENV = {
    "catalog": "COINSP_CATALOG",
    "model": "COINSP_MODEL",
    "catalogs_dir": "COINSP_CATALOGS_DIR",
    "device": "COINSP_DEVICE",
    "data_root": "COINSP_DATA_ROOT",
}


@dataclass(frozen=True)
class Settings:
    catalog: Path  # the catalog folder the Search and Catalog pages serve
    model: Path  # the model checkpoint that catalog was built with
    catalogs_dir: Path  # the folder holding all catalogs (Quality page: compare two)
    device: str = DEFAULT_DEVICE
    data_root: Path = DEFAULT_DATA_ROOT  # the only folder tree the Catalog page reads images and manifests from


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamlit run app/main.py --", allow_abbrev=False, add_help=False)
    parser.add_argument("--catalog", help=f"catalog folder (env {ENV['catalog']}, default {DEFAULT_CATALOG})")
    parser.add_argument("--model", help=f"model checkpoint (env {ENV['model']}, default {DEFAULT_MODEL})")
    parser.add_argument("--catalogs-dir", dest="catalogs_dir",
                        help=f"folder of catalogs to compare (env {ENV['catalogs_dir']}, "
                             f"default {DEFAULT_CATALOGS_DIR})")
    parser.add_argument("--device", help=f"torch device (env {ENV['device']}, default {DEFAULT_DEVICE})")
    parser.add_argument("--data-root", dest="data_root",
                        help=f"folder holding the images and manifests the Catalog page may use "
                             f"(env {ENV['data_root']}, default {DEFAULT_DATA_ROOT})")
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
        data_root=Path(pick("data_root", str(DEFAULT_DATA_ROOT))).expanduser().absolute(),
    )


class OutsideDataRootError(ValueError):
    """A path the Catalog page was given that lies outside the configured data root."""


def inside_data_root(path: str | os.PathLike, data_root: Path) -> Path:
    """The path, resolved (links followed), if it lies inside the data root; OutsideDataRootError otherwise.

    Relative paths are taken from the folder the app was started in, like the other settings.
    Nothing is read or written here: the check comes before any catalog operation touches the path.
    """
    root = Path(os.path.realpath(data_root))
    resolved = Path(os.path.realpath(Path(path).expanduser()))
    if resolved != root and root not in resolved.parents:
        raise OutsideDataRootError(
            f"{shown(path)} is outside the data folder {root}: the Catalog page only uses images and manifests "
            f"inside it (set {ENV['data_root']} to change it)")
    return resolved


def shown(path: str | os.PathLike) -> str:
    """A path typed by someone, as one short printable line."""
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in os.fsdecode(path))
    return text if len(text) <= 200 else text[:200] + "…"


def admin_token(environ: dict[str, str] | None = None) -> str | None:
    """The catalog-management token from the environment, or None when management is off."""
    token = (os.environ if environ is None else environ).get(ADMIN_TOKEN_ENV, "").strip()
    return token or None


def token_weakness(token: str) -> str | None:
    """Why a configured token is too weak to guard catalog management (None: strong enough).

    The bits are an estimate from the token itself: its length times the entropy of its own
    character frequencies. It catches repeats and short alphabets (`aaaaaaaaaaaaaaaa`: 0 bits,
    `abcdabcdabcdabcd`: 32); a random token of 16 bytes in hex or base64 scores 93 bits or more."""
    if len(token) < MIN_ADMIN_TOKEN_LENGTH:
        return f"it is shorter than {MIN_ADMIN_TOKEN_LENGTH} characters ({len(token)})"
    counts = Counter(token)
    if len(counts) < MIN_ADMIN_TOKEN_DISTINCT:
        return f"it has only {len(counts)} different characters (at least {MIN_ADMIN_TOKEN_DISTINCT})"
    bits = -sum(n * math.log2(n / len(token)) for n in counts.values())
    if bits < MIN_ADMIN_TOKEN_BITS:
        return f"it is too predictable: about {bits:.0f} bits of entropy (at least {MIN_ADMIN_TOKEN_BITS})"
    return None


def admin_token_problem(environ: dict[str, str] | None = None) -> str | None:
    """Why catalog management is off (None when a usable token is configured)."""
    token = admin_token(environ)
    if token is None:
        return (f"Catalog management is off: this app serves search only. To manage the catalog, start the "
                f"app with a secret token in the environment variable {ADMIN_TOKEN_ENV} (at least "
                f"{MIN_ADMIN_TOKEN_LENGTH} characters; ./run.sh makes one when it serves on 127.0.0.1) "
                "and enter it here.")
    weakness = token_weakness(token)
    if weakness is not None:
        return (f"Catalog management is off: {ADMIN_TOKEN_ENV} is too weak: {weakness}. Choose a random "
                "secret (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(24))'` or "
                "`openssl rand -hex 16`) and restart the app.")
    return None


def plain_http_problem(url: str | None) -> str | None:
    """A warning when the page was opened over plain HTTP from another machine (`url`: the address in
    the browser, st.context.url): a token typed there crosses the network readable. None over HTTPS,
    on a loopback address, or when the address is unknown."""
    from urllib.parse import urlparse

    if not url:
        return None
    parsed = urlparse(url)
    if parsed.scheme != "http" or is_loopback(parsed.hostname):
        return None
    return (f"This page is served over plain HTTP ({parsed.scheme}://{parsed.netloc}): the token you type "
            "crosses the network unencrypted. Serve the app behind a TLS proxy (docs/api.md, \"Serving beyond "
            "this machine\") and sign in over https://.")


def is_admin_token(entered: str, environ: dict[str, str] | None = None) -> bool:
    """True if `entered` is the configured token (constant-time comparison); False when none is configured."""
    if admin_token_problem(environ) is not None:
        return False
    return hmac.compare_digest(entered.strip().encode(), admin_token(environ).encode())


def is_loopback(host: str | None) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address((host or "").strip("[]")).is_loopback
    except ValueError:
        return False


def server_settings_problem(get_option) -> str | None:
    """Why the app must not serve with the Streamlit options it was started with (None: all set).

    `get_option` is streamlit's st.get_option. Without an explicit address Streamlit listens on every
    interface, and without the cap it accepts 200 MB uploads: both happen when the app is started
    from another folder than the repository's (its .streamlit/config.toml is then not read).
    """
    address, cap = get_option("server.address"), get_option("server.maxUploadSize")
    missing = []
    if not address:
        missing.append("no listen address (Streamlit then listens on every interface)")
    if cap is None or cap > MAX_UPLOAD_MB:
        missing.append(f"an upload cap of {cap} MB instead of at most {MAX_UPLOAD_MB} MB")
    if not missing:
        return None
    return (f"This app was started without its server settings: {' and '.join(missing)}. Streamlit reads "
            f".streamlit/config.toml only from the folder it is started in. Start it with {START_COMMAND} "
            "(or from the repository folder).")
