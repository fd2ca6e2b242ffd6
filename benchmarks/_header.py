"""The header every benchmark table starts with (docs/BENCHMARKS.md): machine, CPU flags, torch, date."""

from __future__ import annotations

import datetime
import os
import platform


def machine_header() -> str:
    """Markdown lines naming the CPU model and cores, its vector flags, torch and the date."""
    import torch

    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"Machine: {model}, {os.cpu_count()} cores, {gpu}; CPU flags: {', '.join(shown) or 'none of note'}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {datetime.date.today().isoformat()}\n"
    )
