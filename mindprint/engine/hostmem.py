"""Peak host memory of this process. Standard library only: TRL's benchmark venv imports it too."""

from __future__ import annotations

from pathlib import Path


def peak_rss_gib() -> float | None:
    """This process's peak resident memory (VmHWM, Linux): host RAM, whatever the device; None elsewhere.

    Not getrusage's ru_maxrss: that keeps the high-water mark of the image before exec, so a child
    started from a big parent would report the parent's size.
    """
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return None if kib is None else kib / 2**20
