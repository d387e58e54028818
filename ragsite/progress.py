"""Progress output shared by the management commands."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int | None, desc: str, unit: str = "it"):
    # Always shown, also when stderr is not a terminal (CI logs, `docker compose logs`).
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, mininterval=1.0, dynamic_ncols=True)


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``counted(1, "chunk")`` -> "1 chunk", ``counted(3, "chunk")`` -> "3 chunks" (thousands separated)."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
