"""``attention-mamba-seg models``: list, describe, download, import and remove model packages."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``models`` subcommand and its actions."""
    parser = subparsers.add_parser(
        "models",
        help="list, inspect and import model packages",
        description="Manage model packages (bundled and imported).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("list", help="list bundled, imported and available-to-download models")
    p.set_defaults(func=run_list)
    p = actions.add_parser("download", help="download a registry model into the user cache (SHA-256 checked)")
    p.add_argument("model", metavar="ID")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="seconds without data before giving up")
    p.add_argument(
        "--progress-format",
        default="bar",
        choices=["bar", "jsonl"],
        help="bar: a progress bar on stderr; jsonl: JSON lines on stdout (for the Slicer module)",
    )
    p.set_defaults(func=run_download)
    p = actions.add_parser("info", help="show a model's classes, preprocessing, training and metrics")
    p.add_argument("model", metavar="ID", help="model id or model folder")
    p.add_argument("--verify", action="store_true", help="also check the weights' SHA-256")
    p.add_argument("--json", action="store_true", help="print the raw model.json instead of the card")
    p.set_defaults(func=run_info)
    p = actions.add_parser("import", help="verify a model package (folder or .zip) and copy it to the user cache")
    p.add_argument("path", metavar="PATH")
    p.add_argument(
        "--progress-format",
        default="text",
        choices=["text", "jsonl"],
        help="text: one line when done; jsonl: JSON lines on stdout (progress by step, the model "
        "written; for the Slicer module)",
    )
    p.set_defaults(func=run_import)
    p = actions.add_parser("remove", help="delete one imported or downloaded model from the user cache")
    p.add_argument("model", metavar="ID")
    p.set_defaults(func=run_remove_one)
    p = actions.add_parser("remove-imported", help="delete every imported model from the user cache")
    p.set_defaults(func=run_remove)
    return parser


def run_list(args: argparse.Namespace) -> int:
    """Print one line per model: id, version, where it is (bundled, imported, available), task."""
    from ..package import bundled_models_dir, list_models
    from ..registry import installed_entry, load_registry

    models = list_models()
    registry = load_registry()
    bundled = bundled_models_dir().resolve()
    print(f"{'ID':24s} {'VERSION':10s} {'WHERE':22s} TASK")
    for m in models:
        source = "bundled" if m.path.resolve().parent == bundled else "imported"
        newer = registry.get(m.id)
        if newer is not None and newer.weights_sha256 != m.card.sha256:
            source += f" ({newer.version} online)"
        print(f"{m.id:24s} {m.version:10s} {source:22s} {'' if m.card.task is None else m.card.task}")
    listed = {m.id for m in models}
    for entry in registry.values():
        if entry.id not in listed and installed_entry(entry) is None:
            where = f"download {entry.size / 1e6:.0f} MB"
            print(f"{entry.id:24s} {entry.version:10s} {where:22s} {entry.task}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    """Download a registry model (no-op when installed); prints where it went."""
    from ..registry import download_model

    if args.progress_format == "jsonl":
        from ..slicer.child_process import run_with_jsonl_events

        return run_with_jsonl_events(lambda progress: _download(args, progress, download_model), unit="bytes")
    from tqdm import tqdm

    with tqdm(desc=args.model, unit="B", unit_scale=True, file=sys.stderr, dynamic_ncols=True) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        return _download(args, progress, download_model)


def _download(args, progress, download_model) -> int:
    package = download_model(args.model, progress=progress, timeout=args.timeout)
    if args.progress_format == "jsonl":
        from ..slicer.child_process import emit_event

        emit_event("written", path=str(package.path), model=package.id, version=package.version)
    else:
        print(f"Model '{package.id}' (version {package.version}) is in {package.path}")
    return 0


def run_remove_one(args: argparse.Namespace) -> int:
    """Remove one model from the cache; says how much was freed."""
    from ..model_store import remove_imported_model

    freed = remove_imported_model(args.model)
    print(f"Removed model '{args.model}' from the cache: {freed / 1e6:.1f} MB freed.")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Print the model card of one model."""
    import json

    from ..package import load_model_package

    package = load_model_package(args.model)
    if args.verify:
        package.verify()
    if args.json:
        print(json.dumps(package.card.to_dict(), indent=2, ensure_ascii=False))
        return 0
    print(package.describe())
    if args.verify:
        print("  weights       SHA-256 verified")
    return 0


def run_import(args: argparse.Namespace) -> int:
    """Import a package; prints its id and location."""
    from ..model_store import import_model_package

    if args.progress_format == "jsonl":
        from ..slicer.child_process import emit_event, run_with_jsonl_events

        def run(progress) -> int:
            package = import_model_package(args.path, progress=progress)
            emit_event("written", path=str(package.path), model=package.id, version=package.version)
            return 0

        return run_with_jsonl_events(run, unit="steps")
    package = import_model_package(args.path)
    print(f"Imported model '{package.id}' (version {package.version}) into {package.path}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    """Remove every imported model."""
    from ..model_store import imported_models_dir, remove_imported_models

    removed = remove_imported_models()
    print(f"Removed {len(removed)} imported model(s) from {imported_models_dir()}: {', '.join(removed) or '-'}")
    return 0
