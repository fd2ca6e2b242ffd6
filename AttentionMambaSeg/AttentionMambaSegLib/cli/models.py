"""``attention-mamba-seg models``: list, describe, import and remove model packages."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``models`` subcommand and its actions."""
    parser = subparsers.add_parser("models", help="list, inspect and import model packages",
                                   description="Manage model packages (bundled and imported).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("list", help="list bundled and imported models")
    p.set_defaults(func=run_list)
    p = actions.add_parser("info", help="show a model's classes, preprocessing, training and metrics")
    p.add_argument("model", metavar="ID", help="model id or model folder")
    p.add_argument("--verify", action="store_true", help="also check the weights' SHA-256")
    p.set_defaults(func=run_info)
    p = actions.add_parser("import", help="verify a model package (folder or .zip) and copy it to the user cache")
    p.add_argument("path", metavar="PATH")
    p.set_defaults(func=run_import)
    p = actions.add_parser("remove-imported", help="delete every imported model from the user cache")
    p.set_defaults(func=run_remove)
    return parser


def run_list(args: argparse.Namespace) -> int:
    """Print one line per model: id, version, source, task."""
    from ..package import bundled_models_dir, list_models

    models = list_models()
    if not models:
        print(f"No models installed (bundled models go in {bundled_models_dir()}).")
        return 0
    bundled = bundled_models_dir().resolve()
    print(f"{'ID':24s} {'VERSION':10s} {'SOURCE':9s} TASK")
    for m in models:
        source = "bundled" if m.path.resolve().parent == bundled else "imported"
        print(f"{m.id:24s} {m.version:10s} {source:9s} {m.config.get('task', '')}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Print the model card of one model."""
    from ..package import load_model_package

    package = load_model_package(args.model)
    print(package.describe())
    if args.verify:
        package.verify()
        print("weights:        SHA-256 verified")
    return 0


def run_import(args: argparse.Namespace) -> int:
    """Import a package; prints its id and location."""
    from ..package import import_model_package

    package = import_model_package(args.path)
    print(f"Imported model '{package.id}' (version {package.version}) into {package.path}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    """Remove every imported model."""
    from ..package import imported_models_dir, remove_imported_models

    removed = remove_imported_models()
    print(f"Removed {len(removed)} imported model(s) from {imported_models_dir()}: {', '.join(removed) or '-'}")
    return 0
