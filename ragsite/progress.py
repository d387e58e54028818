"""Progress output shared by the management commands."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int | None, desc: str, unit: str = "it"):
    # Always shown, also when stderr is not a terminal (CI logs, `docker compose logs`).
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, mininterval=1.0, dynamic_ncols=True)
