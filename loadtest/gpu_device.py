"""The device side of :mod:`loadtest.gpu_check`: its name, its fp16 FLOP limit, its utilisation."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
from typing import Any

logger = logging.getLogger(__name__)

# Dense (no sparsity) fp16 tensor-core peaks, TFLOPS, by device name; the first match counts.
PEAK_FP16_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"H100.*PCIe", 756.0),
    (r"H100.*NVL", 835.5),
    (r"H100|H200|H800", 989.4),
    (r"A100", 312.0),
    (r"L40S", 362.05),
    (r"\bL4\b", 121.0),
)


def peak_fp16_flops(name: str) -> float | None:
    """The device's dense fp16 tensor peak in FLOP/s, or None when the name is not in the table."""
    for pattern, tflops in PEAK_FP16_TFLOPS:
        if re.search(pattern, name):
            return tflops * 1e12
    return None


def device_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


class Utilisation:
    """Mean GPU utilisation (%) over a window, sampled every 0.2 s by NVML or nvidia-smi."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read = self._reader()

    def _reader(self) -> Any:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # no nvidia-ml-py, or no driver: try the command line
            smi = shutil.which("nvidia-smi")
            if smi is None:
                return None
            query = [smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", f"--id={self.index}"]
            return lambda: float(subprocess.run(query, capture_output=True, text=True, check=True).stdout.split()[0])

    def start(self) -> None:
        self.samples, self._stop = [], threading.Event()
        if self._read is not None:
            self._thread = threading.Thread(target=self._sample, name="gpu-util", daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.samples.append(self._read())
            except Exception as exc:
                logger.warning("GPU utilisation unreadable: %s", exc)
                return

    def stop(self) -> float | None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return sum(self.samples) / len(self.samples) if self.samples else None
