"""Command line for catalogs: python -m index <command> ... (python -m index <command> -h for help).

    build    --manifest M --model CKPT --out DIR [--index FACTORY] [--memory-budget 2GB] [--precision bf16|fp32]
    add      --catalog DIR (--manifest M | --images FOLDER) [--model CKPT]
    remove   --catalog DIR (--ids N ... | --paths P ...)
    rebuild  --catalog DIR [--model CKPT] [--index FACTORY] [--memory-budget 2GB] [--reembed]
    ensure   --manifest M --model CKPT --out DIR   (build, or bring up to date: model, new images)
    restore  --catalog DIR [--version V] [--list]   (undo: the previous version current again)
    search   --catalog DIR --model CKPT (--image FILE [--box X0,Y0,X1,Y1] | --id N) [--k 10] [--category C]
             [--hide-duplicates 0.98] [--min-score S] [--group-by product_id]
             [--filter "color=red OR color=blue AND brand=X"] [--no-mirror]
    evaluate --catalog DIR [--out PREFIX] [--label product_id] [--max-queries N]
    info     --catalog DIR [--json]
    embed-ray         --manifest M --model CKPT --out SHARDS [--address ADDR] [--num-cpus N] [--actors N] [--batch-size B]
    build-from-shards --shards SHARDS --model CKPT --out DIR [--index IVF65536,PQ64np]   (on-disk catalog)
    export   --catalog DIR [--parquet OUT.parquet] [--qdrant-path DIR | --qdrant-url URL [--api-key KEY]] [--collection NAME]
    import-fashion-mnist --out DIR [--split test]
    edit     [--catalog DIR] --id N [--id M ...] [--set category=footwear ...] [--tag TAG ...]   (undo: restore)
    hygiene  --catalog DIR [--out PREFIX] [--k 10] [--pixel-threshold 0.997] [--no-pixel-check]

User errors (missing files, bad manifests, a model that does not fit the catalog, a catalog
locked by another process) print one line `error: ...` and exit with status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import shutil
import sys
import time
from pathlib import Path

from embedder.images import ImageError
from embedder.regions import parse_box
from index.catalog.add import add_to_catalog
from index.scale.backends import BackendSpec, command_backend
from index.catalog.loaded import Catalog
from index.catalog.operations import build_catalog, rebuild_catalog, remove_from_catalog, restore_catalog
from index.catalog.store import INFO_FILE, CatalogError, read_info
from embedder.files import format_size
from index.catalog.choose import IndexChoiceError
from index.cli import EVALUATE_FULL_UP_TO, EVALUATE_SAMPLE, build_parser
from index.manifest import ManifestError
from index.scale.ray_embed import RayMissingError
from index.scale.shards import ShardsError
from index.search.exact import measure_recall

EXIT_USER_ERROR = 2


class UsageError(ValueError):
    pass


# ----------------------------------------------------------------------------- commands

def _print_report(report) -> None:
    print(report.summary())
    if report.skipped:
        print(f"skipped {len(report.skipped):,} file(s):")
        for path, reason in report.skipped[:10]:
            print(f"  {path}: {reason}")
        if len(report.skipped) > 10:
            print(f"  … and {len(report.skipped) - 10:,} more (all listed in {INFO_FILE})")
    if report.index and report.operation in ("build", "rebuild", "build-from-shards"):
        print(f"index: {report.index.get('factory')} — {report.index.get('reason')}")
        if report.index.get("params"):
            print(f"search parameters: {report.index['params']}")


def cmd_build(args) -> int:
    report = build_catalog(args.manifest, args.model, args.out, index=args.index, memory_budget=args.memory_budget,
                           precision=args.precision, overwrite=args.overwrite, progress=not args.quiet,
                           lock_timeout=args.wait, project_dims=getattr(args, "project_dims", None))
    _print_report(report)
    return 0


def cmd_add(args) -> int:
    report = add_to_catalog(args.catalog, args.manifest, images=args.images, model=args.model,
                            progress=not args.quiet, lock_timeout=args.wait)
    _print_report(report)
    return 0


def cmd_remove(args) -> int:
    if not args.ids and not args.paths:
        raise UsageError("give --ids or --paths of the items to remove")
    _print_report(remove_from_catalog(args.catalog, ids=args.ids, paths=args.paths, progress=not args.quiet,
                                      lock_timeout=args.wait))
    return 0


def cmd_rebuild(args) -> int:
    _print_report(rebuild_catalog(args.catalog, model=args.model, index=args.index, memory_budget=args.memory_budget,
                                  precision=args.precision, reembed=args.reembed, progress=not args.quiet,
                                  lock_timeout=args.wait))
    return 0


def cmd_restore(args) -> int:
    from index.catalog.store import list_versions

    if args.list:
        for v in list_versions(args.catalog):
            what = (f"{v.items:,} items, built {v.built_at}, by {(v.last_operation or {}).get('operation', '?')}"
                    if v.restorable else f"cannot be restored: {v.why_not}")
            print(f"{v.version}  {'current' if v.current else 'earlier'}  {what}")
        return 0
    report = restore_catalog(args.catalog, args.version, lock_timeout=args.wait)
    print(report.summary() if report.wrote else f"version {report.version} is already the current one")
    return 0


def cmd_edit(args) -> int:
    from index.catalog.edit import edit_catalog, parse_assignments

    _print_report(edit_catalog(args.catalog, ids=args.ids, values=parse_assignments(args.values), tags=args.tags,
                               lock_timeout=args.wait))
    return 0


def cmd_hygiene(args) -> int:
    from index.quality.hygiene import hygiene_report
    from index.quality.hygiene_report import HygieneError

    try:
        report = hygiene_report(Catalog.load(args.catalog), k=args.k, duplicate_threshold=args.duplicate_threshold,
                                candidate_threshold=args.candidate_threshold,
                                pixel_threshold=None if args.no_pixel_check else args.pixel_threshold)
    except HygieneError as exc:
        raise UsageError(str(exc)) from None
    written = report.write(args.out or Path("reports") / f"{args.catalog.absolute().name}-hygiene")
    print(report.summary())
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_ensure(args) -> int:
    from embedder.checkpoint import load_checkpoint, preprocessing_from_checkpoint
    from index.catalog.embedding_settings import why_reembed

    if not (args.out / INFO_FILE).exists():
        return cmd_build(argparse.Namespace(**vars(args), overwrite=False))
    info = read_info(args.out)
    stored_dims = None if info.projection is None else int(info.projection["dims"])
    if args.project_dims != stored_dims:
        def vectors(dims):
            return "the model's own vectors" if dims is None else f"vectors projected to {dims} dims"
        raise CatalogError(f"{args.out} holds {vectors(stored_dims)}, not {vectors(args.project_dims)}: build it "
                           "again with `python -m index build ... --overwrite` at the size wanted")
    payload = load_checkpoint(args.model)
    changed = why_reembed(info.model_fingerprint, info.preprocessing, payload["fingerprint"],
                          preprocessing_from_checkpoint(payload))
    if changed:
        print(f"{changed}: re-embedding the catalog")
        _print_report(rebuild_catalog(args.out, model=args.model, index=args.index, memory_budget=args.memory_budget,
                                      precision=args.precision, reembed=True, progress=not args.quiet,
                                      lock_timeout=args.wait))
    report = add_to_catalog(args.out, args.manifest, model=args.model, progress=not args.quiet, lock_timeout=args.wait)
    if report.wrote or report.skipped:
        _print_report(report)
    else:
        print(f"catalog {args.out} is up to date ({report.items:,} items)")
    return 0


def cmd_search(args) -> int:
    from index.search.service import CatalogItem, SearchService, object_regions, to_rgb

    if args.k < 1:
        raise UsageError("--k must be at least 1")
    box = None
    if args.box is not None:
        if args.image is None:
            raise UsageError("--box is a region of the photo given with --image")
        try:
            box = parse_box(args.box)
        except ImageError as exc:
            raise UsageError(f"--box: {exc}") from None
    service = SearchService(args.catalog, args.model)
    options = {"k": args.k, "category": args.category, "hide_duplicates_above": args.hide_duplicates,
               "min_score": args.min_score, "group_by": args.group_by, "metadata_filter": args.filter,
               "mirror": not args.no_mirror}
    photo = None
    if args.image is not None:
        try:
            photo = to_rgb(args.image)  # decoded once, for the search and the other things in it
            found = service.search(photo, box=box, **options)
        except ImageError as exc:
            raise UsageError(f"{args.image}: {exc}") from None
    else:
        found = service.search(CatalogItem(args.id), **options)
    results, timing = found.frame, found.timing.as_dict()
    if args.json:
        print(json.dumps({"results": json.loads(results.to_json(orient="records")), **found.summary(),
                          "timing_ms": timing}, indent=2))
        return 0
    if found.category is not None and found.category.unlike_catalog:
        print("predicted category: none (not like anything this catalog sells)")
    elif found.category is not None:
        print(f"predicted category: {found.category.name} ({found.category.probability:.0%})")
    if found.filter_matches == 0:
        print(f"no item matches the filter {found.filter}")
    shown = [c for c in ("rank", "score", "id", "category", "product_id", "matched_photos", "product_photos", "path")
             if c in results.columns]
    if len(results):
        print(results[shown].to_string(index=False, formatters={"score": "{:.4f}".format}))
    if found.hidden is not None and len(found.hidden):
        print(f"{len(found.hidden)} near-duplicate(s) hidden: ids {', '.join(map(str, found.hidden['id']))}")
    print(f"{len(results)} results over {len(service.catalog):,} items; decode+embed "
          f"{timing['decode_embed_ms']:.1f} ms, search {timing['search_ms']:.1f} ms")
    if found.dropped:
        print(f"{found.dropped} result(s) scoring below --min-score {args.min_score} left out")
    if found.confidence is not None and found.confidence.weak:
        print(found.confidence.notice())
    others = object_regions(photo)[1:] if photo is not None and box is None else []
    if others:  # the automatic crop chose one thing; the shopper may have meant another
        print("other things in the photo (search one with --box): " + "; ".join(",".join(map(str, r)) for r in others))
    return 0


def cmd_evaluate(args) -> int:
    catalog = Catalog.load(args.catalog)
    n = len(catalog)
    max_queries = args.max_queries
    if max_queries is None and n > EVALUATE_FULL_UP_TO:
        max_queries = EVALUATE_SAMPLE
    if max_queries is not None and max_queries < 1:
        raise UsageError("--max-queries must be at least 1")
    started = time.perf_counter()
    report, how = catalog.evaluate(args.label, max_queries=max_queries, seed=args.seed)
    how["seconds"] = round(time.perf_counter() - started, 2)
    prefix = args.out or Path("reports") / f"{args.catalog.absolute().name}-recall"
    from embedder.files import atomic_path

    prefix.parent.mkdir(parents=True, exist_ok=True)
    markdown = (f"# Recall@k of catalog {args.catalog}\n\n{how['mode']}, labels = {args.label}, "
                f"model {catalog.fingerprint}, {how['seconds']} s.\n\n" + report.to_markdown())
    with atomic_path(prefix.with_name(prefix.name + ".csv")) as tmp:
        report.to_frame().to_csv(tmp)
    with atomic_path(prefix.with_name(prefix.name + ".json")) as tmp:
        tmp.write_text(json.dumps({**report.to_dict(), "evaluation": how, "catalog": str(args.catalog),
                                   "model_fingerprint": catalog.fingerprint}, indent=2) + "\n")
    with atomic_path(prefix.with_name(prefix.name + ".md")) as tmp:
        tmp.write_text(markdown)
    print(markdown)
    print(f"wrote {prefix}.csv, {prefix}.json, {prefix}.md")
    return 0


def cmd_info(args) -> int:
    info = read_info(args.catalog)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    index, counts = info.index, info.counts
    lines = [
        f"catalog      {args.catalog} (version {info.version}, built {info.built_at})",
        f"items        {counts.get('items', 0):,}" + (" — " + ", ".join(f"{k} {v:,}" for k, v in
                                                     counts.get("categories", {}).items()) if counts.get("categories") else ""),
        f"skipped      {counts.get('skipped', 0):,} file(s)",
        f"model        {info.model_path} (fingerprint {info.model_fingerprint}, {info.feature_dim}-d, "
        f"{info.precision})",
        f"index        {index['factory']} {index.get('params') or ''}; recall@10 vs exact "
        f"{index.get('recall_at_10', float('nan')):.3f}",
        f"             {index.get('reason', '')}",
        f"images       {info.root}",
        *([f"vectors      in the embedding shards {info.vectors.folder} ({info.vectors.dtype}); "
           "the index's inverted lists are memory-mapped from disk"] if info.vectors else []),
        *([f"projection   {info.projection['input_dim']}-d model vectors projected to {info.projection['dims']} dims "
           f"(PCA of the catalog's vectors, fingerprint {info.projection['fingerprint']}); queries go through it"]
          if info.projection else []),
        f"next id      {info.next_id}",
        f"memory       budget {format_size(info.memory_budget_bytes)}",
    ]
    print("\n".join(lines))
    for entry in info.skipped[:10]:
        print(f"  skipped {entry['path']}: {entry['reason']}")
    return 0


def cmd_export(args) -> int:
    import os

    from index.scale import export

    if args.parquet is None and args.qdrant_path is None and args.qdrant_url is None:
        raise UsageError("give --parquet OUT.parquet and/or --qdrant-path DIR / --qdrant-url URL")
    if args.parquet is not None:
        print(export.export_parquet(args.catalog, args.parquet, progress=not args.quiet).summary())
    if args.qdrant_path is not None or args.qdrant_url is not None:
        client = export.qdrant_client(path=args.qdrant_path, url=args.qdrant_url,
                                      api_key=args.api_key or os.environ.get("QDRANT_API_KEY"))
        try:
            report = export.export_qdrant(args.catalog, client, args.collection or args.catalog.absolute().name,
                                          batch_size=args.batch_size or export.QDRANT_BATCH, recreate=args.recreate,
                                          progress=not args.quiet)
        finally:
            client.close()
        print(report.summary())
    return 0


def cmd_embed_ray(args) -> int:
    from index.scale.ray_embed import embed_manifest

    try:
        report = embed_manifest(args.manifest, args.model, args.out, address=args.address, num_cpus=args.num_cpus,
                                actors=args.actors, batch_size=args.batch_size, precision=args.precision,
                                vector_dtype=args.vector_dtype, overwrite=args.overwrite, progress=not args.quiet)
    except ValueError as exc:  # bad options, a non-empty --out
        raise UsageError(str(exc)) from None
    print(report.summary())
    for path, reason in report.skipped[:10]:
        print(f"  skipped {path}: {reason}")
    if len(report.skipped) > 10:
        print(f"  … and {len(report.skipped) - 10:,} more (all listed in {args.out}/skipped.csv)")
    return 0


def cmd_build_from_shards(args) -> int:
    from index.scale.ondisk import build_from_shards

    _print_report(build_from_shards(args.shards, args.model, args.out, index=args.index,
                                    memory_budget=args.memory_budget, overwrite=args.overwrite,
                                    progress=not args.quiet, lock_timeout=args.wait,
                                    rerank_copy=args.rerank_copy))
    return 0


def cmd_import_fashion_mnist(args) -> int:
    from index.importers import FASHION_MNIST_DIR, import_fashion_mnist

    try:
        manifest = import_fashion_mnist(args.out, args.split, source_dir=args.source or FASHION_MNIST_DIR,
                                        grouping=args.grouping, allow_download=args.allow_download, limit=args.limit)
    except (ValueError, RuntimeError, OSError) as exc:  # no data here, no network, bad grouping
        raise UsageError(str(exc)) from None
    print(manifest)
    return 0


COMMANDS = {"build": cmd_build, "add": cmd_add, "remove": cmd_remove, "rebuild": cmd_rebuild, "ensure": cmd_ensure,
            "restore": cmd_restore,
            "search": cmd_search, "evaluate": cmd_evaluate, "info": cmd_info,
            "import-fashion-mnist": cmd_import_fashion_mnist, "export": cmd_export, "embed-ray": cmd_embed_ray,
            "build-from-shards": cmd_build_from_shards, "hygiene": cmd_hygiene, "edit": cmd_edit}

USER_ERRORS = (CatalogError, ManifestError, ImageError, IndexChoiceError, UsageError, ShardsError, RayMissingError,
               FileNotFoundError, NotADirectoryError, PermissionError)


def _is_user_error(exc: BaseException) -> bool:
    # embedder.checkpoint imports torch; `info` and `evaluate` never load it, so look it up only
    # if it was loaded (otherwise its error cannot have been raised).
    checkpoint = sys.modules.get("embedder.checkpoint")
    return isinstance(exc, USER_ERRORS) or (checkpoint is not None and isinstance(exc, checkpoint.CheckpointError))


_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_DISK_FULL_WORDS = ("No space left on device", "Disk quota exceeded", "File too large")


def _disk_full(exc: BaseException) -> bool:
    # FAISS and Arrow report a failed write in their own exception text, without an errno.
    return (isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS) or any(w in str(exc) for w in _DISK_FULL_WORDS)


def _disk_full_message(args, exc: BaseException) -> str:
    folder = Path(getattr(args, "catalog", None) or getattr(args, "out", None) or ".")
    reason = getattr(exc, "strerror", None) or next((w for w in _DISK_FULL_WORDS if w in str(exc)), "write failed")
    free = ""
    with contextlib.suppress(OSError):
        free = f"; {format_size(shutil.disk_usage(folder if folder.exists() else folder.parent).free)} free now"
    if reason == "File too large":  # a file-size limit (ulimit -f, the file system's maximum), not a full disk
        return (f"a file in {folder} reached the size limit for one file ({reason}{free}): the write was abandoned "
                "and the catalog is as it was before; raise the limit (ulimit -f) and run the command again")
    return (f"the disk holding {folder} is full ({reason}{free}): the write was abandoned and the catalog is as "
            "it was before; free some space (or move the catalog to a bigger disk) and run the command again")


_WRITES = {"build": "out", "ensure": "out", "add": "catalog", "remove": "catalog", "rebuild": "catalog",
           "restore": "catalog"}  # the commands that write a catalog, and the option naming its folder


def after_command(args, spec: BackendSpec | None) -> None:
    """After a command on a Milvus backend (index.scale.backends): a write's new version is synced to
    the collection at once (else the next search would), and `evaluate` also measures the backend's
    own recall@10 against exact search."""
    if spec is None or (args.command == "restore" and getattr(args, "list", False)):
        return
    if args.command in _WRITES:
        catalog = Catalog.load(getattr(args, _WRITES[args.command]), backend=spec.text)
        quiet = getattr(args, "quiet", False)
        print(catalog.backend.sync(catalog, progress=None if quiet else print).summary())
    elif args.command == "evaluate":
        catalog = Catalog.load(args.catalog, backend=spec.text)
        catalog.backend.ensure_synced(catalog)
        recall, queries, lower = measure_recall(catalog, queries=1000)
        print(f"{spec.text}: recall@10 of the served index against exact search {recall:.4f} "
              f"(95% lower bound {lower:.4f}, {queries} catalog items as queries)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with command_backend(args) as backend:  # --backend: where the index is served (index.scale.backends)
            code = COMMANDS[args.command](args)
            after_command(args, backend)
        return code
    except Exception as exc:
        if _disk_full(exc):
            print(f"error: {_disk_full_message(args, exc)}", file=sys.stderr)
            return EXIT_USER_ERROR
        if not _is_user_error(exc):
            raise
        message = str(exc).strip() or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: the catalog is unchanged (an unfinished version is cleaned up next time)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
