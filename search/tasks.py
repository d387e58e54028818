"""Background tasks of the search app."""

from __future__ import annotations

from django_tasks import task


@task()
def keyword_stats_refresh_task() -> bool:
    """Recompute BM25 document frequencies if the corpus moved enough (cheap check otherwise)."""
    from search.keyword import keyword_stats_refresh

    return keyword_stats_refresh(force=False)
