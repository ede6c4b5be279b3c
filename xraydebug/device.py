"""Device selection shared by every command (``--device auto|cpu|cuda|cuda:N``)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; an unavailable CUDA request is an error."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device} requested but CUDA is not available here (use cpu)")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r} (expected auto, cpu, cuda or cuda:N)") from exc


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), where oneDNN's bf16
    kernels beat float32; without it bf16 is emulated and slower.

    ``XRAYDEBUG_NATIVE_BF16=0`` says no whatever the CPU (float32 everywhere ``auto`` would
    pick bf16); with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` it makes an
    AVX-512 machine run torch as an AVX2-only one would, for measuring."""
    if os.environ.get("XRAYDEBUG_NATIVE_BF16", "").strip() == "0":
        return False
    if torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "AVX2", "NO AVX"):
        return False  # torch held to AVX2 (ATEN_CPU_CAPABILITY): run as such a CPU would
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in checks:
        fn = getattr(torch.cpu, name, None)
        try:
            if fn is not None and fn():
                return True
        except RuntimeError:  # pragma: no cover - exotic builds
            continue
    return False


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> dict[str, Any]:
    """What the numbers of a run depend on: CPU model, the SIMD level torch dispatches to
    (``torch.backends.cpu.get_cpu_capability()``), native bf16, threads and GPU."""
    return {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_native_bf16(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def machine_line(info: dict[str, Any] | None = None) -> str:
    """One line naming what a benchmark's numbers depend on (every benchmark prints it first):
    ``CPU: <model> (torch capability <AVX2|AVX512|...>, native bf16 yes/no), N threads``, of
    this machine or of a recorded :func:`machine_info` ``info``."""
    info = info or machine_info()
    bf16 = "yes" if info["native_bf16"] else "no"
    gpu = f", GPU {info['cuda']}" if info["cuda"] else ""
    return (
        f"CPU: {info['cpu']} (torch capability {info['cpu_capability']}, native bf16 {bf16}), "
        f"{info['threads']} threads{gpu}"
    )
