"""Measure the ventricular function a cardiac model gives against the manual labels of ACDC patients.

Usage:
    python tools/measure_cardiac_function.py DATASET [--model cardiac-acdc] [--mode fast] [--split val]
        [--patients patient019 ...] [--threads N] [--json OUT.json]

For each patient of the split (DATASET is the ACDC folder in the nnU-Net layout: ``imagesTr``,
``labelsTr``, ``splits_final.json``, ``patients.json``; ED saved as frame01, ES as frame02), the ED
and ES volumes go through exactly what ``attention-mamba-seg cardiac ED ES`` runs
(:func:`AttentionMambaSegLib.clinical.analyse_cine`), and the same figures are computed from the
manual ED/ES labelmaps (:func:`AttentionMambaSegLib.clinical.function_from_labelmaps`). Prints a
row per patient and the mean absolute error of each figure (EF in percentage points, volumes in mL,
mass in g), and the seconds per patient on this machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

import AttentionMambaSegLib  # noqa: F401  (first: it sets torch's OpenMP wait policy)

FIGURES = ("lv_edv_ml", "lv_esv_ml", "lv_ef_percent", "rv_edv_ml", "rv_esv_ml", "rv_ef_percent", "lv_myocardial_mass_g")


def measure(
    dataset: Path,
    model: str = "cardiac-acdc",
    mode: str = "fast",
    split: str = "val",
    patients: list[str] | None = None,
    device: str = "cpu",
) -> dict:
    """Per-patient predicted and manual figures, their mean absolute errors and the time per patient."""
    import SimpleITK as sitk

    from AttentionMambaSegLib import clinical
    from AttentionMambaSegLib.inference import InferenceSettings, Predictor

    info = json.loads((dataset / "patients.json").read_text())
    if patients is None:
        cases = json.loads((dataset / "splits_final.json").read_text())[0][split]
        patients = sorted({c.split("_")[0] for c in cases})
    predictor = Predictor(model, InferenceSettings(device=device, mode=mode))
    structures = clinical.CardiacLabels.from_classes(predictor.package.card.foreground_classes)
    rows = []
    for patient in patients:
        images = [dataset / "imagesTr" / f"{patient}_frame0{i}_0000.nii.gz" for i in (1, 2)]
        labels = [sitk.ReadImage(str(dataset / "labelsTr" / f"{patient}_frame0{i}.nii.gz")) for i in (1, 2)]
        start = time.perf_counter()
        predicted = clinical.analyse_cine(clinical.read_cine(images), predictor)
        seconds = time.perf_counter() - start
        manual = clinical.function_from_labelmaps(labels, structures, 0, 1)
        row = {
            "patient": patient,
            "group": info.get(patient, {}).get("group"),
            "seconds": round(seconds, 1),
            "predicted": predicted.function.to_dict(),
            "manual": manual.function.to_dict(),
        }
        rows.append(row)
        print(
            f"{patient} {row['group']}: LV EF {row['predicted']['lv_ef_percent']:.1f} vs manual "
            f"{row['manual']['lv_ef_percent']:.1f}, {seconds:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    mae = {k: round(float(np.mean([abs(r["predicted"][k] - r["manual"][k]) for r in rows])), 2) for k in FIGURES}
    return {
        "model": predictor.package.id,
        "version": predictor.package.card.version,
        "mode": mode,
        "device": str(predictor.device),
        "split": split,
        "patients": len(rows),
        "mean_absolute_error": mae,
        "seconds_per_patient": round(float(np.mean([r["seconds"] for r in rows])), 1),
        "machine": f"{platform.processor() or platform.machine()}",
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--model", default="cardiac-acdc")
    parser.add_argument("--mode", default="fast", choices=("fast", "accurate"))
    parser.add_argument("--split", default="val")
    parser.add_argument("--patients", nargs="*", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = measure(args.dataset, args.model, args.mode, args.split, args.patients, args.device)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
