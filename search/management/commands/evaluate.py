"""`manage.py evaluate DATASET_DIR [--split test] [--mode keyword|semantic|hybrid|all] [--limit-queries N] [--json FILE]`.

Loads a BEIR-layout dataset into its own source (reusing what is already ingested), runs
every judged query through ``chunk_search`` (the code path behind /api/search/) and prints
nDCG@10, Recall@100 and latency per mode.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from documents.maintenance import tables_analyze
from documents.models import Document, Source
from documents.services import INGEST_BATCH_DOCUMENTS, IngestError, document_ingest_many, source_get_or_create
from documents.signals import changes_batched
from ragsite.progress import progress_bar
from search.evaluation import DatasetError, evaluate_mode, load_dataset
from search.filters import SearchFilters
from search.selectors import MODES, SearchUnavailable, chunk_search

URL_PREFIX = "beir://"


class Command(BaseCommand):
    help = "Evaluate keyword, semantic and hybrid search on a BEIR-layout dataset."

    def add_arguments(self, parser):
        parser.add_argument("dataset_dir")
        parser.add_argument("--split", default="test")
        parser.add_argument("--mode", choices=[*MODES, "all"], default="all")
        parser.add_argument("--limit-queries", type=int, default=0, help="evaluate only the first N queries")
        parser.add_argument("--json", dest="json_path", help="write the results to this file")
        parser.add_argument("--source", help="source name (default: beir-<folder name>)")
        parser.add_argument("--no-sync", action="store_true", help="do not embed pending chunks before searching")
        parser.add_argument(
            "--through-api",
            action="store_true",
            help="send every query as GET /api/search/ through Django's full HTTP stack (latency includes "
            "authentication, serialisation and snippets)",
        )
        parser.add_argument(
            "--rerank",
            action="store_true",
            help="also evaluate each mode with the rerank stage (needs RERANK_URL); reported as MODE+rerank",
        )

    def handle(
        self,
        *args,
        dataset_dir,
        split,
        mode,
        limit_queries,
        json_path,
        source,
        no_sync,
        through_api,
        rerank=False,
        **options,
    ):
        if limit_queries < 0:
            raise CommandError("--limit-queries must be a positive number")
        from search.rerank import rerank_enabled

        if rerank and not rerank_enabled():
            raise CommandError("--rerank needs a rerank endpoint: set RERANK_URL (and RERANK_API).")
        try:
            dataset = load_dataset(dataset_dir, split)
        except DatasetError as exc:
            raise CommandError(str(exc)) from exc
        src = source_get_or_create(name=source or f"beir-{dataset.name}", kind=Source.Kind.API)
        self.stdout.write(
            f"dataset {dataset.name}/{split}: {len(dataset.corpus)} documents, {len(dataset.queries)} judged queries"
        )
        self._load(dataset, src)
        tables_analyze()  # the queries below must not be planned on a never-analyzed corpus
        modes = list(MODES) if mode == "all" else [mode]
        if not no_sync and any(m != "keyword" for m in modes):
            self._sync()
        else:
            from vectors.tasks import enqueue_vector_sync

            enqueue_vector_sync()  # the worker embeds what this run did not
        from search.keyword_stats import keyword_stats_refresh

        keyword_stats_refresh(force=False)

        id_of = {
            doc_id: url.rsplit("/", 1)[-1]
            for doc_id, url in Document.objects.filter(source=src).values_list("id", "url")
        }
        query_ids = sorted(dataset.queries, key=_natural)
        if limit_queries:
            query_ids = query_ids[:limit_queries]
        filters = SearchFilters(source_ids=[src.pk])

        client = self._api_client() if through_api else None
        results = []
        fallbacks: dict[str, int] = {}
        runs = [(m, False) for m in modes] + ([(m, True) for m in modes] if rerank else [])
        for m, reranking in runs:
            label = f"{m}+rerank" if reranking else m

            def search(text: str, m=m, reranking=reranking, label=label):
                started = time.perf_counter()
                if client is not None:
                    params = {"q": text, "mode": m, "limit": 100, "source": src.pk}
                    if reranking:
                        params["rerank"] = "true"
                    response = client.get("/api/search/", params)
                    took = (time.perf_counter() - started) * 1000
                    if response.status_code != 200:
                        raise CommandError(
                            f"{m}: /api/search/ answered {response.status_code}: {response.content[:300]!r}"
                        )
                    body = response.json()
                    if reranking and not body.get("reranked"):
                        fallbacks[label] = fallbacks.get(label, 0) + 1
                    return [id_of.get(r["document_id"], "") for r in body["results"]], took
                response = chunk_search(
                    text,
                    mode=m,
                    limit=100,
                    filters=filters,
                    max_per_document=1,
                    with_snippets=False,
                    rerank=reranking,
                )
                took = (time.perf_counter() - started) * 1000
                if reranking and not response.reranked:
                    fallbacks[label] = fallbacks.get(label, 0) + 1
                return [id_of.get(r.document_id, "") for r in response.results], took

            try:
                with progress_bar(len(query_ids), f"query {label}", "q") as bar:
                    results.append(evaluate_mode(label, dataset, search, query_ids=query_ids, progress=bar.update))
            except SearchUnavailable as exc:
                raise CommandError(f"{m}: {exc}") from exc

        for label, count in fallbacks.items():
            self.stderr.write(f"{label}: {count} queries fell back to the unreranked order (see the server log)")
        self.stdout.write("")
        self.stdout.write(f"{'mode':<10} {'nDCG@10':>8} {'R@100':>8} {'p50 ms':>8} {'p95 ms':>8} {'queries':>8}")
        for r in results:
            self.stdout.write(
                f"{r.mode:<10} {r.ndcg_at_10:>8.4f} {r.recall_at_100:>8.4f} {r.latency_ms_p50:>8.1f} "
                f"{r.latency_ms_p95:>8.1f} {r.queries:>8}"
            )
        if json_path:
            from django.conf import settings

            payload = {
                "through_api": through_api,
                "dataset": dataset.name,
                "split": split,
                "documents": len(dataset.corpus),
                "settings": {
                    name: getattr(settings, name)
                    for name in (
                        "EMBEDDING_MODEL",
                        "EMBEDDING_RUNTIME",
                        "CHUNK_SIZE_TOKENS",
                        "CHUNK_OVERLAP_TOKENS",
                        "SEARCH_RRF_K",
                        "SEARCH_KEYWORD_WEIGHT",
                        "SEARCH_SEMANTIC_WEIGHT",
                        "SEARCH_CANDIDATES",
                        "SEARCH_MAX_PER_DOCUMENT",
                        "SEARCH_BM25_K1",
                        "SEARCH_BM25_B",
                        *(("RERANK_API", "RERANK_MODEL", "RERANK_TOP_N") if rerank else ()),
                    )
                },
                "rerank_fallbacks": fallbacks,
                "results": [{k: v for k, v in r.__dict__.items() if k != "per_query"} for r in results],
            }
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)
            Path(json_path).write_text(json.dumps(payload, indent=2) + "\n")
            self.stdout.write(f"wrote {json_path}")

    def _api_client(self):
        """A test client with a throwaway read key: the real URL, authentication and serializers."""
        from django.test import Client

        from accounts.auth import api_key_create

        row, key = api_key_create(name="evaluate (temporary)")
        import atexit

        atexit.register(lambda: type(row).objects.filter(pk=row.pk).delete())
        return Client(HTTP_AUTHORIZATION=f"Bearer {key}", SERVER_NAME="localhost")

    def _load(self, dataset, src: Source) -> None:
        prefix = f"{URL_PREFIX}{dataset.name}/"
        present = set(Document.objects.filter(source=src, url__startswith=prefix).values_list("url", flat=True))
        todo = [(doc_id, doc) for doc_id, doc in dataset.corpus.items() if prefix + doc_id not in present]
        if not todo:
            self.stdout.write(f"all {len(dataset.corpus)} documents already ingested")
            return
        failed = 0
        with changes_batched(embed_here=True), progress_bar(len(todo), "ingest", "doc") as bar:
            for start in range(0, len(todo), INGEST_BATCH_DOCUMENTS):
                batch = todo[start : start + INGEST_BATCH_DOCUMENTS]
                items = [
                    {
                        "title": doc["title"],
                        "url": prefix + doc_id,
                        "text": doc["text"] if doc["text"].strip() else doc["title"],
                        "mime": "text/plain",
                        "metadata": {"beir_id": doc_id},
                    }
                    for doc_id, doc in batch
                ]
                for (doc_id, _), result in zip(batch, document_ingest_many(source=src, items=items), strict=True):
                    if isinstance(result, IngestError):
                        failed += 1
                        self.stderr.write(f"document {doc_id}: {result.message}")
                bar.update(len(batch))
        self.stdout.write(f"ingested {len(todo) - failed} documents ({failed} failed)")

    def _sync(self) -> None:
        from vectors.sync import pending_chunks, vectors_sync_pending

        todo = pending_chunks().count()
        if not todo:
            return
        with progress_bar(todo, "embed", "chunk") as bar:
            report = vectors_sync_pending(progress=bar.update)
        if report.stopped_by:
            raise CommandError(f"embedding stopped: {report.stopped_by}")


def _natural(value: str):
    return (0, int(value)) if value.isdigit() else (1, value)
