"""Make the release asset and the registry entry of a model package folder.

Usage:
    python tools/publish_model.py MODEL_FOLDER [--out dist] [--url-base URL] [--update-registry]

Writes ``OUT/<id>-<version>.zip`` (reproducible: the same folder always gives the same SHA-256), prints
its registry entry (JSON) and, with ``--update-registry``, puts that entry into
``AttentionMambaSeg/Resources/Models/registry.json`` (replacing the entry of the same id). Then upload the
.zip as a release asset at the URL the entry names (``--url-base`` + file name).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "AttentionMambaSeg"))

from AttentionMambaSegLib.registry import build_archive, load_registry, registry_path  # noqa: E402

DEFAULT_URL_BASE = "https://github.com/attention-mamba-seg/SlicerAttentionMambaSeg/releases/download/models/"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="model package folder (model.json + model.safetensors)")
    parser.add_argument("--out", default="dist", help="folder for the .zip (default dist/)")
    parser.add_argument("--url-base", default=DEFAULT_URL_BASE, help="where release assets are downloaded from")
    parser.add_argument("--update-registry", action="store_true", help="write the entry into registry.json")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    probe = build_archive(args.folder, out / "archive.zip.tmp")
    name = f"{probe.id}-{probe.version}.zip"
    (out / "archive.zip.tmp").replace(out / name)
    entry = probe.to_dict()
    entry["urls"] = [args.url_base.rstrip("/") + "/" + name]
    print(json.dumps(entry, indent=2))
    if args.update_registry:
        path = registry_path()
        entries = {e.id: e.to_dict() for e in load_registry(path).values()}
        entries[entry["id"]] = entry
        text = json.dumps({"format": 1, "models": [entries[k] for k in sorted(entries)]}, indent=2) + "\n"
        path.write_text(text, encoding="utf-8")
        print(f"updated {path}", file=sys.stderr)
    print(f"wrote {out / name}: upload it to {entry['urls'][0]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
