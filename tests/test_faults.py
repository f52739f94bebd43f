"""Faults, for real, in separate processes: kill -9 during training and during catalog writes, a
full disk under the catalog, and two rebuilds at once. The promise each test checks: the previous
state is intact and usable (same search results), the next run succeeds, and no failure shows a
traceback."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from index.catalog.add import add_to_catalog
from index.catalog.loaded import Catalog
from index.catalog.operations import build_catalog, rebuild_catalog
from index.catalog.store import read_info

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # one thread: same floats in every run
HELD_OUT = 6  # manifest rows left out of the first build, for `add`
WAIT_S = 1800  # only a guard against a child that hangs: no result depends on how long anything takes

# How a child process stops at a point and lets the parent act there: it says the point's word on a line of
# its stdout, then waits for a line on its stdin. The parent reads the word (reached()), then kills the child
# there or writes a line to let it go on: no sleeps, no clocks, the same on any machine under any load.
HOLD = """
import sys
def hold(word):
    print(word, flush=True)
    sys.stdin.readline()
"""

# A child that runs `python -m index ...` but stops at one write step (before or after it), so that the
# parent kills it exactly there.
PAUSING_CLI = HOLD + """
import importlib
from index.__main__ import main
step, when, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
module, step = step.split(":")
module = importlib.import_module(module)
original = getattr(module, step)
def paused(*args, **kwargs):
    result = original(*args, **kwargs) if when == "after" else None
    hold("reached")
    return result if when == "after" else original(*args, **kwargs)
setattr(module, step, paused)
sys.exit(main(argv))
"""

# A child that runs `python -m index ...` and stops before its Nth fsync (the write steps of a version:
# each file, its folder, catalog.json), for kills spread over a whole write.
FSYNC_COUNTING_CLI = HOLD + """
import os
from index.__main__ import main
stop_at, argv = int(sys.argv[1]), sys.argv[2:]
fsync, calls = os.fsync, [0]
def counted(fd):
    calls[0] += 1
    if calls[0] == stop_at:
        hold("reached")
    return fsync(fd)
os.fsync = counted
sys.exit(main(argv))
"""

# `python -m training ...` that stops right after it first writes last.pt (the end of its first epoch).
TRAINING_UNTIL_FIRST_SAVE = HOLD + """
import runpy
from pathlib import Path
from training import train
save = train.save_checkpoint
def saved(path, *args, **kwargs):
    result = save(path, *args, **kwargs)
    if Path(path).name == "last.pt":
        hold("saved last.pt")
    return result
train.save_checkpoint = saved
sys.argv = ["training", *sys.argv[1:]]
runpy.run_module("training", run_name="__main__")
"""


# ---------------------------------------------------------------- helpers

@pytest.fixture
def shop(tiny_shop, tmp_path):
    """A copy of the tiny shop's images; a catalog of all but the last HELD_OUT items."""
    root = tmp_path / "shop"
    shutil.copytree(tiny_shop.manifest.parent, root)
    tiny_shop.items.to_csv(root / "manifest.csv", index=False)  # the readable images only
    tiny_shop.items.iloc[:-HELD_OUT].to_csv(root / "first.csv", index=False)
    catalog = tmp_path / "catalog"
    build_catalog(root / "first.csv", tiny_shop.model, catalog, progress=False)
    return {"root": root, "manifest": root / "manifest.csv", "catalog": catalog, "model": tiny_shop.model}


def consistent_snapshot(folder: Path) -> dict:
    """Load the catalog, check it is one consistent version, and record what searching it gives."""
    catalog = Catalog.load(folder)
    ids = catalog.ids
    assert len(catalog.metadata) == catalog.embeddings.shape[0] == catalog.index.ntotal
    assert len(np.unique(ids)) == len(ids)
    hits = catalog.search_vectors(np.asarray(catalog.embeddings), 3)
    scores, found = hits.padded(3)
    return {"version": catalog.info["version"], "ids": ids.tolist(), "found": found.tolist(),
            "scores": np.round(scores, 5).tolist(), "paths": catalog.metadata["path"].tolist()}


def same_results(a: dict, b: dict) -> bool:
    return all(a[key] == b[key] for key in ("ids", "found", "scores", "paths"))


def leftovers(folder: Path) -> list[str]:
    """Unfinished writes: staging folders, orphaned versions, temporary files."""
    info = read_info(folder)
    kept = {info["version"], info.get("previous_version")}
    names = [p.name for p in (folder / "versions").iterdir() if p.name not in kept]
    return names + [p.name for p in folder.glob(".*.tmp")]


def child(*argv, env=ENV, cwd=ROOT) -> subprocess.Popen:
    """A child process the test talks to through its stdin and stdout (HOLD)."""
    return subprocess.Popen([sys.executable, *map(str, argv)], cwd=cwd, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def reached(process: subprocess.Popen, word: str) -> None:
    """Wait until the child says it holds at `word` (HOLD); AssertionError when it ends first."""
    for line in process.stdout:
        if line.strip() == word:
            return
    raise AssertionError(f"the child ended (status {process.wait()}) before {word!r}: {process.stderr.read()}")


def go_on(process: subprocess.Popen) -> None:
    """Let a child holding at a point (HOLD) go on."""
    process.stdin.write("go\n")
    process.stdin.flush()


def kill_hard(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=WAIT_S)


# ---------------------------------------------------------------- kill -9 during training

def write_training_manifest(folder: Path, n: int = 96) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (4, 28, 28))
    rows = []
    for i in range(n):
        product = i % 4
        pixels = np.clip(base[product] + rng.integers(-30, 31, (28, 28)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "L").save(folder / f"{i}.png")
        rows.append({"path": f"{i}.png", "category": "ab"[product // 2], "product_id": str(product)})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def training_cli(manifest: Path, out: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "training", "--train-manifest", str(manifest), "--preset", "coins", "--epochs", "4",
            "--batch-size", "16", "--grid", "1", "--out", str(out), *extra]


def test_kill_9_during_training_then_resume_gives_the_uninterrupted_model(tmp_path):
    import torch

    from embedder.checkpoint import load_checkpoint

    manifest = write_training_manifest(tmp_path / "data")
    def run(*argv):
        return subprocess.run(list(argv), cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=WAIT_S)

    whole = run(*training_cli(manifest, tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr

    killed = child("-c", TRAINING_UNTIL_FIRST_SAVE, *training_cli(manifest, tmp_path / "killed")[3:], cwd=tmp_path)
    reached(killed, "saved last.pt")
    kill_hard(killed)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "model.pt").exists(), "the run ended before the kill: nothing was tested"
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["training_state"]["epoch"] < 3

    resumed = run(*training_cli(manifest, tmp_path / "killed", "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout + resumed.stderr
    a = load_checkpoint(tmp_path / "whole" / "model.pt")
    b = load_checkpoint(tmp_path / "killed" / "model.pt")
    for name, tensor in a["backbone_state"].items():
        assert torch.equal(tensor, b["backbone_state"][name]), name
    assert a["fingerprint"] == b["fingerprint"]


# ---------------------------------------------------------------- kill -9 during add and rebuild

ADD_STEPS = [("index.catalog.add:embed_files", "before"), ("index.catalog.store:write_embeddings", "after"),
             ("index.catalog.store:write_info", "before")]
REBUILD_STEPS = [("index.catalog.operations:build_index", "after"), ("index.catalog.store:write_metadata", "after"),
                 ("index.catalog.store:write_info", "before")]


@pytest.mark.parametrize("operation, step, when",
                         [("add", *s) for s in ADD_STEPS] + [("rebuild", *s) for s in REBUILD_STEPS])
def test_kill_9_during_a_catalog_write_leaves_the_previous_catalog(shop, tmp_path, operation, step, when):
    before = consistent_snapshot(shop["catalog"])
    argv = (["add", "--catalog", shop["catalog"], "--manifest", shop["manifest"]] if operation == "add" else
            ["rebuild", "--catalog", shop["catalog"], "--index", "HNSW32"])
    writer = child("-c", PAUSING_CLI, step, when, "-q", *argv)
    reached(writer, "reached")
    kill_hard(writer)

    after = consistent_snapshot(shop["catalog"])
    assert after["version"] == before["version"] and same_results(after, before)
    assert read_info(shop["catalog"])["index"]["factory"] == "Flat"
    # The OS released the dead writer's lock: the next write goes through at once, and tidies up.
    if operation == "add":
        report = add_to_catalog(shop["catalog"], shop["manifest"], progress=False, lock_timeout=0)
        assert report.added == HELD_OUT
    else:
        rebuild_catalog(shop["catalog"], index="HNSW32", progress=False, lock_timeout=0)
        assert read_info(shop["catalog"])["index"]["factory"] == "HNSW32"
    assert consistent_snapshot(shop["catalog"])["version"] != before["version"]
    assert leftovers(shop["catalog"]) == []


@pytest.mark.parametrize("nth_fsync", [1, 3, 5, 7, 9])
def test_kill_9_anywhere_in_a_rebuilds_writes_never_leaves_a_mixed_catalog(shop, nth_fsync):
    before = consistent_snapshot(shop["catalog"])
    for index in ("HNSW32", "Flat"):
        writer = child("-c", FSYNC_COUNTING_CLI, nth_fsync, "-q", "rebuild", "--catalog", shop["catalog"],
                       "--index", index)
        reached(writer, "reached")
        kill_hard(writer)
        now = consistent_snapshot(shop["catalog"])  # the old version or the new one, whole
        assert same_results(now, before)
    rebuild_catalog(shop["catalog"], progress=False, lock_timeout=0)
    assert same_results(consistent_snapshot(shop["catalog"]), before) and leftovers(shop["catalog"]) == []


# ---------------------------------------------------------------- a full disk

# Ways to put the catalog on a small file system of its own, in the order tried. Each runs the
# scenario below inside a private mount namespace, so the mount goes away with the process.
SMALL_DISK_METHODS = {
    "tmpfs": ["unshare", "--mount", "--propagation", "private", "sh", "-c",
              'mount -t tmpfs -o size="$SIZE" tmpfs "$DISK" && exec "$@"', "sh"],
    "user-namespace tmpfs": ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                             'mount -t tmpfs -o size="$SIZE" tmpfs "$DISK" && exec "$@"', "sh"],
    "loop-mounted ext4 image": ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                'truncate -s "$SIZE" "$DISK.img" && mkfs.ext4 -q -F "$DISK.img" && '
                                'mount -o loop "$DISK.img" "$DISK" && exec "$@"', "sh"],
}
DISK_SIZE = "2M"

# Runs on the small disk: copy the catalog there, fill the disk, run `add` (or, in mode
# file-size-limit, cap the size of any file the child writes instead), report as JSON. It imports
# this module for consistent_snapshot: torch is imported only inside the training test.
FULL_DISK_SCENARIO = """
import json, os, resource, shutil, signal, subprocess, sys
catalog_src, disk, manifest, mode = sys.argv[1:5]
catalog = os.path.join(disk, "catalog")
shutil.copytree(catalog_src, catalog)
from tests.test_faults import consistent_snapshot
before = consistent_snapshot(catalog)
limit = None
if mode == "fill":
    with open(os.path.join(disk, "filler"), "wb", buffering=0) as filler:  # unbuffered: the error comes here
        try:
            while True:
                filler.write(bytes(4096))
        except OSError:
            pass
else:  # no small disk: every file the child writes is capped at the current embeddings' size
    limit = os.path.getsize(os.path.join(catalog, "versions", before["version"], "embeddings.npy")) - 1
def cap():
    if limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the cap fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
add = [sys.executable, "-m", "index", "-q", "add", "--catalog", catalog, "--manifest", manifest]
rebuild = [sys.executable, "-m", "index", "-q", "rebuild", "--catalog", catalog, "--index", "HNSW32"]
full = subprocess.run(add, capture_output=True, text=True, preexec_fn=cap)
after = consistent_snapshot(catalog)
rebuild_full = subprocess.run(rebuild, capture_output=True, text=True, preexec_fn=cap)
after_rebuild = consistent_snapshot(catalog)
if mode == "fill":
    os.remove(os.path.join(disk, "filler"))
again = subprocess.run(add, capture_output=True, text=True)
print(json.dumps({"rc": full.returncode, "stderr": full.stderr, "stdout": full.stdout, "before": before,
                  "after": after, "rebuild_rc": rebuild_full.returncode, "rebuild_stderr": rebuild_full.stderr,
                  "after_rebuild": after_rebuild, "again_rc": again.returncode, "again_stderr": again.stderr,
                  "final": consistent_snapshot(catalog)}))
"""


def run_full_disk_scenario(shop, tmp_path) -> tuple[str, Path, dict]:
    disk = tmp_path / "disk"
    disk.mkdir()
    scenario = [sys.executable, "-c", FULL_DISK_SCENARIO, str(shop["catalog"]), str(disk), str(shop["manifest"])]
    env = {**ENV, "SIZE": DISK_SIZE, "DISK": str(disk)}
    tried = []
    for method, wrapper in SMALL_DISK_METHODS.items():
        if shutil.which(wrapper[0]) is None:
            tried.append(f"{method}: no {wrapper[0]}")
            continue
        done = subprocess.run(wrapper + scenario + ["fill"], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=WAIT_S)
        if done.returncode == 0 and done.stdout.strip():
            return method, disk, json.loads(done.stdout.strip().splitlines()[-1])
        tried.append(f"{method}: {(done.stderr.strip().splitlines() or ['failed'])[-1]}")
    done = subprocess.run(scenario[:4] + [str(disk), str(shop["manifest"]), "file-size-limit"], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=WAIT_S)
    if done.returncode != 0:
        pytest.skip("no way to make a write fail: " + "; ".join(tried + [done.stderr.strip()[-300:]]))
    method = "RLIMIT_FSIZE (simulates the failing write, not a full disk)"
    return method, disk, json.loads(done.stdout.strip().splitlines()[-1])


def test_a_full_disk_fails_the_write_with_a_clear_message_and_keeps_the_catalog(shop, tmp_path):
    method, disk, result = run_full_disk_scenario(shop, tmp_path)
    err = result["stderr"]
    assert result["rc"] == 2, (method, result)
    if method.startswith("RLIMIT_FSIZE"):
        assert err.startswith(f"error: a file in {disk / 'catalog'} reached the size limit"), err
    else:
        assert err.startswith(f"error: the disk holding {disk / 'catalog'} is full (No space left on device"), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err + result["stdout"], (method, err)
    assert result["after"]["version"] == result["before"]["version"] and same_results(result["after"], result["before"])
    # A rebuild on the full disk: the same clear refusal, the same catalog.
    assert result["rebuild_rc"] == 2 and result["rebuild_stderr"].startswith(err[:err.index("(")]), result
    assert result["after_rebuild"]["version"] == result["before"]["version"]
    # Space freed (or no cap): the same command now succeeds and adds the held-out items.
    assert result["again_rc"] == 0, (method, result["again_stderr"])
    assert len(result["final"]["ids"]) == len(result["before"]["ids"]) + HELD_OUT


# ---------------------------------------------------------------- two rebuilds at once

# A rebuild that says when it asks for the catalog's lock ("asking for the lock") and, once it holds it,
# holds it until the parent lets it go on ("holding the lock"; HOLD).
SLOW_REBUILD = HOLD + """
from pathlib import Path
import filelock
from index.catalog import operations
from index.__main__ import main
acquire = filelock.BaseFileLock.acquire
def announced(self, *args, **kwargs):
    if Path(self.lock_file).name == ".lock":  # the catalog's lock, not any other the process takes
        print("asking for the lock", flush=True)
    return acquire(self, *args, **kwargs)
filelock.BaseFileLock.acquire = announced
build = operations.build_index
def held(*args, **kwargs):
    hold("holding the lock")
    return build(*args, **kwargs)
operations.build_index = held
sys.exit(main(sys.argv[1:]))
"""


def slow_rebuild(folder: Path, *extra) -> subprocess.Popen:
    return child("-c", SLOW_REBUILD, "-q", "rebuild", "--catalog", folder, *extra)


def finished(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=WAIT_S)  # stdin closed: a child still holding goes on
    return process.returncode, out, err


def test_two_rebuilds_at_once_one_is_refused_with_the_documented_message(shop):
    before = consistent_snapshot(shop["catalog"])
    first = slow_rebuild(shop["catalog"], "--index", "HNSW32")
    reached(first, "holding the lock")
    second = slow_rebuild(shop["catalog"])  # starts while the first holds the lock
    second_result = finished(second)
    go_on(first)
    results = [finished(first), second_result]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, _, err in results if code == 2)
    assert refused.startswith("error: catalog ") and "is being changed by another process (pid " in refused
    assert "rebuild since" in refused and "wait for it to finish and try again" in refused
    assert "Traceback" not in refused
    after = consistent_snapshot(shop["catalog"])
    assert after["version"] != before["version"] and same_results(after, before)


def test_two_rebuilds_with_wait_run_one_after_the_other(shop):
    before = consistent_snapshot(shop["catalog"])
    first = slow_rebuild(shop["catalog"], "--index", "HNSW32", "--wait", "60")
    reached(first, "holding the lock")
    second = slow_rebuild(shop["catalog"], "--index", "Flat", "--wait", "60")
    reached(second, "asking for the lock")  # while the first holds it: the second waits, it does not give up
    assert second.poll() is None
    go_on(first)
    assert finished(first)[0] == 0
    reached(second, "holding the lock")  # only now, after the first has finished
    go_on(second)
    code, _, err = finished(second)
    assert code == 0, err
    info = read_info(shop["catalog"])
    after = consistent_snapshot(shop["catalog"])
    assert same_results(after, before)
    # The second's version is the last, written on top of the first's.
    assert info["index"]["factory"] == "Flat"
    assert info["previous_version"] not in (None, before["version"]) and leftovers(shop["catalog"]) == []


# ---------------------------------------------------------------- kill -9 while data-loader workers run

# `add` with data-loader workers (as for a manifest of thousands of images), each worker stuck in
# decoding so it outlives the writer. Each worker says its pid on stdout, then waits for a signal.
ADD_WITH_BUSY_WORKERS = """
import os, signal, sys
from embedder import embed
from index.__main__ import main
argv = sys.argv[1:]
embed_files = embed.Embedder.embed_files
def with_workers(self, paths, **kwargs):
    return embed_files(self, paths, **{**kwargs, "num_workers": 2, "batch_size": 1})
embed.Embedder.embed_files = with_workers
decode = embed.decode_image
def stuck_decode(path, *args, **kwargs):
    print(f"worker {os.getpid()}", flush=True)
    signal.pause()
    return decode(path, *args, **kwargs)
embed.decode_image = stuck_decode
sys.exit(main(argv))
"""


def test_kill_9_of_a_writer_frees_the_catalog_at_once_though_its_loader_workers_live_on(shop, tmp_path):
    from index.catalog.store import catalog_lock

    before = consistent_snapshot(shop["catalog"])
    writer = child("-c", ADD_WITH_BUSY_WORKERS, "-q", "add", "--catalog", shop["catalog"], "--manifest",
                   shop["manifest"])
    workers: list[int] = []
    try:
        for line in writer.stdout:  # each worker says its pid when it is stuck
            if line.startswith("worker "):
                workers.append(int(line.split()[1]))
            if len(set(workers)) == 2:
                break
        assert len(set(workers)) == 2, writer.stderr.read()
        kill_hard(writer)
        assert all(Path(f"/proc/{pid}").exists() for pid in workers), "the workers died with the writer"
        # The workers are orphaned, busy and alive, yet the catalog is free: they hold no copy of the lock.
        with catalog_lock(shop["catalog"], "test", timeout=0):
            pass
        report = add_to_catalog(shop["catalog"], shop["manifest"], progress=False, lock_timeout=0)
        assert report.added == HELD_OUT and all(Path(f"/proc/{pid}").exists() for pid in workers)
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        kill_hard(writer)
    after = consistent_snapshot(shop["catalog"])
    assert len(after["ids"]) == len(before["ids"]) + HELD_OUT and leftovers(shop["catalog"]) == []


# ---------------------------------------------------------------- a read-only catalog folder

# Ways to make the catalog folder read-only for one command, in the order tried: a read-only bind
# mount in a private mount namespace (as root, or in a user namespace), else its permissions
# (which do not stop root).
READ_ONLY_METHODS = {
    "read-only bind mount": ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             'mount --bind "$DIR" "$DIR" && mount -o remount,ro,bind "$DIR" && exec "$@"', "sh"],
    "read-only bind mount in a user namespace": [
        "unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
        'mount --bind "$DIR" "$DIR" && mount -o remount,ro,bind "$DIR" && exec "$@"', "sh"],
}


def read_only_wrapper(folder: Path) -> tuple[str, list[str]]:
    """A command prefix under which `folder` cannot be written; skips the test where there is none."""
    probe = [sys.executable, "-c", "import sys; open(sys.argv[1] + '/probe', 'w')", str(folder)]
    env = {**ENV, "DIR": str(folder)}
    for method, wrapper in READ_ONLY_METHODS.items():
        if shutil.which("unshare") is None:
            break
        done = subprocess.run(wrapper + probe, env=env, capture_output=True, text=True, timeout=WAIT_S)
        if done.returncode != 0 and "Read-only file system" in done.stderr:
            return method, wrapper
    if os.geteuid() != 0:
        folder.chmod(0o555)
        (folder / "versions").chmod(0o555)
        return "permissions 0555", []
    pytest.skip("no way to make a folder read-only here (no mount namespace, and root ignores permissions)")


@pytest.mark.parametrize("operation", ["add", "rebuild", "remove", "build", "restore"])
def test_a_read_only_catalog_is_refused_in_one_line_and_left_as_it_was(shop, operation):
    folder = shop["catalog"]
    add_to_catalog(folder, shop["manifest"], progress=False)  # a previous version, for restore
    before = consistent_snapshot(folder)
    argv = {"add": ["add", "--catalog", folder, "--manifest", shop["manifest"]],
            "rebuild": ["rebuild", "--catalog", folder, "--index", "HNSW32"],
            "remove": ["remove", "--catalog", folder, "--ids", "0"],
            "build": ["build", "--manifest", shop["manifest"], "--model", shop["model"], "--out", folder, "--overwrite"],
            "restore": ["restore", "--catalog", folder]}[operation]
    method, wrapper = read_only_wrapper(folder)
    try:
        done = subprocess.run(wrapper + [sys.executable, "-m", "index", "-q", *map(str, argv)], cwd=ROOT,
                              env={**ENV, "DIR": str(folder)}, capture_output=True, text=True, timeout=WAIT_S)
    finally:
        for path in (folder, folder / "versions"):
            path.chmod(0o755)
    assert done.returncode == 2, (method, done.stderr)
    assert done.stderr.startswith(f"error: catalog folder {folder} is not writable ("), (method, done.stderr)
    assert "nothing was changed" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr + done.stdout
    after = consistent_snapshot(folder)
    assert after["version"] == before["version"] and same_results(after, before)
