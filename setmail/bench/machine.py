"""What a benchmark ran on, printed above its figures: CPU model, cores, and whether the machine
was idle (the 1-minute load average read just before the run).  Figures from a loaded machine
are noisy: the ratios measured within one run still compare, absolute rates do not."""
from __future__ import annotations

import os
import platform

#: a 1-minute load average at or under this share of the cores counts as idle
IDLE_LOAD_PER_CORE = 0.25


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on Linux/BSD
        return None


def describe() -> dict:
    """The machine now: model, cores, 1-minute load average, idle or not."""
    cores = os.cpu_count() or 1
    load = load_average()
    idle = load is not None and load <= IDLE_LOAD_PER_CORE * cores
    return {"cpu": cpu_model(), "cores": cores, "load_before": load, "idle": idle}


def line(m: dict) -> str:
    load = "unknown" if m["load_before"] is None else f"{m['load_before']:.2f}"
    state = "idle" if m["idle"] else "LOADED: figures are noisy, compare the ratios"
    return f"machine: {m['cpu']}, {m['cores']} cores; load average before the run {load} ({state})"


def status_mib(pid: int, field: str) -> float:
    """A memory figure of a running process from /proc/<pid>/status, in MiB (``VmRSS`` now,
    ``VmHWM`` its peak); 0 when the field is missing."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0
