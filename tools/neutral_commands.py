"""Rewrite the commands recorded in a model.json with neutral run folders and dataset placeholders.

Usage:
    python tools/neutral_commands.py AttentionMambaSeg/Resources/Models/<id>/model.json [...]

A recorded command names the folders of the machine it ran on; in the card each dataset path becomes
``$DATASETS/<name>`` and each run folder ``runs/<id>-<version>`` (the version that command produced).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

_DATASET = re.compile(r"(?:\S*/)?datasets/([A-Za-z0-9_-]+)")
_RUN = re.compile(r"(?:\S*/)?runs/[A-Za-z0-9_.-]+")


def neutral(command: str, model_id: str, version: str) -> str:
    """``command`` with dataset paths as ``$DATASETS/<name>`` and run folders as ``runs/<id>-<version>``."""
    command = _DATASET.sub(lambda m: f"$DATASETS/{m.group(1)}", command)
    return _RUN.sub(f"runs/{model_id}-{version}", command)


def rewrite(config: dict) -> dict:
    model_id, version = config["id"], str(config["version"])
    training = config.get("training") or {}
    if training.get("command"):
        training["command"] = neutral(training["command"], model_id, version)
    for step in training.get("earlier_training") or []:
        if step.get("command"):
            step["command"] = neutral(step["command"], model_id, str(step.get("version", "")))
    for entry in (config.get("metrics") or {}).values():
        if isinstance(entry, dict) and entry.get("command"):
            entry["command"] = neutral(entry["command"], model_id, version)
    return config


def main(argv: list[str]) -> int:
    for name in argv:
        path = Path(name)
        config = rewrite(json.loads(path.read_text(encoding="utf-8")))
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(path)
        print(f"{path}: commands rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
