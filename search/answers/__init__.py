"""Answers with citations: retrieve, number the best passages, answer from them, check the citations.

Modules: ``retrieval`` (search, relevance, passages within the token budget), ``passages``
(what a provider is given), ``llm`` (OpenAI-compatible chat) and ``extractive`` (offline)
providers behind ``providers.AnswerProvider``, ``citations`` (marker checking, streamed too),
``generate`` (the answer as events, the provider chosen by settings) and ``errors``.

One path for the API, the page and any other caller:

1. ``answer_retrieve`` runs ``chunk_search`` (so answers see what search shows), drops passages
   that are not relevant (below), removes duplicate texts, and numbers what fits in
   ``ASK_CONTEXT_TOKENS`` as passages [1]..[n] (rank order; the last one may be cut to fit).
2. A provider answers from those passages only: ``OpenAIChatProvider`` (any OpenAI-compatible
   chat completions server, when ``LLM_MODEL`` is set) or ``ExtractiveProvider`` (offline, the
   default: the question's best sentences, each cited).
3. ``CitationFilter`` rewrites the answer's markers so every ``[n]`` names a passage that was
   given: ``[1, 3]`` becomes ``[1][3]``, a number outside 1..n is dropped (an LLM may invent
   ``[9]`` or cite from its own memory). It works on a stream too, holding back a marker cut
   across two chunks until it is complete.

Relevance, i.e. when to answer "I could not find this in the knowledge base." without calling
any provider:

- no search results, in any mode;
- semantic and hybrid: a passage counts only if the cosine similarity between the question and
  the chunk (the same vectors the vector store holds, read from the embedding cache) is at least
  ``ASK_MIN_SIMILARITY`` (default 0.30). Chosen from data: all-MiniLM-L6-v2 on SciFact, 150
  training claims against a sample of 600 abstracts (their relevant ones plus 450 others), and
  40 questions on other subjects (cooking, travel, software...) against the same abstracts.
  Claims: the relevant abstract scores >= 0.30 for 95% of them (median 0.58), the best abstract
  >= 0.30 for 99%. Off-subject questions: the best abstract scores a median 0.19, 95th
  percentile 0.26, and only 1 of 40 reaches 0.30 (0.25 would let 12% through, 0.35 would lose
  12% of relevant abstracts). A bigger corpus gives an off-subject question more chances to
  find a near miss, so raise the floor if "nothing found" should win more often. The numbers
  are the local model's: another embedding model scales cosines differently and needs its own.
- keyword: the user asked for literal matches, so a BM25 match counts as relevant; the floor is
  not applied (a keyword-only match is often a rare name or code the embedder does not know).

If the embedder is down, hybrid search already falls back to keyword results (with a warning),
and relevance falls back to the keyword rule too.
"""
