"""Background tasks of the search app."""

from __future__ import annotations

from django_tasks import task


@task()
def keyword_stats_refresh_task() -> bool:
    """Recompute BM25 document frequencies if the corpus moved enough (cheap check otherwise)."""
    from documents.maintenance import tables_analyze
    from search.keyword_stats import keyword_stats_refresh

    # Queued after ingestion from anywhere (API, admin, crawl jobs): keep the planner's
    # statistics fresh too, which costs one catalog query when little changed.
    tables_analyze()
    return keyword_stats_refresh(force=False)
