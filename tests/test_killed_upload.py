"""kill -9 in the middle of an add from the upload page: the photos it had saved in the catalog folder are
named by no version, and the next write under the catalog's lock deletes them; the catalog is the one
before the add. The child is killed at the point it signals (its add has saved the photos and is
embedding them), never after a guessed delay."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from index.catalog.loaded import Catalog
from index.catalog.operations import remove_from_catalog
from index.catalog.store import read_info
from index.catalog.uploaded_files import PHOTOS_FOLDER
from tests.support.photos import product_photo, zip_of

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

# Uploads a zip to the catalog as the Catalog page does; when the add starts embedding the saved photos it
# says so on stdout and waits on stdin, which the parent never writes: it is killed there.
ADD_UNTIL_EMBEDDING = """
import sys
from pathlib import Path
from app.uploads import add_uploads, stage_uploads

catalog, archive = Path(sys.argv[1]), Path(sys.argv[2])

def progress(stage, done, total):
    if stage.startswith("embedding"):
        print("embedding", flush=True)
        sys.stdin.read()

staged = stage_uploads([("new.zip", archive.read_bytes())], catalog, "shoes")
add_uploads(catalog, staged, progress=progress)
"""


def saved_photos(catalog: Path) -> list[Path]:
    return sorted(p for p in (catalog / PHOTOS_FOLDER).rglob("*") if p.is_file())


def test_kill_9_mid_add_leaves_photos_that_the_next_write_deletes(tiny_shop, tmp_path):
    catalog = tmp_path / "catalog"
    shutil.copytree(tiny_shop.catalog, catalog)
    before = read_info(catalog).version
    archive = tmp_path / "new.zip"
    archive.write_bytes(zip_of({f"shoe-{i}/front.png": product_photo((6 * i, 200 - 5 * i, 90)) for i in range(30)}))

    child = subprocess.Popen([sys.executable, "-c", ADD_UNTIL_EMBEDDING, str(catalog), str(archive)], cwd=ROOT,
                             env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "embedding", child.stderr.read()
        assert len(saved_photos(catalog)) == 31  # the 30 photos and the batch's manifest, saved for the add
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert read_info(catalog).version == before  # the add never committed

    first = int(Catalog.load(catalog).ids[0])
    remove_from_catalog(catalog, ids=[first], progress=False, lock_timeout=60)  # the next write
    assert saved_photos(catalog) == []
    assert all(Path(p).is_file() for p in Catalog.load(catalog).metadata["image_path"])
