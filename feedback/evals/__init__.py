"""The eval runner: a golden set through a release's real pipeline, scored, reported and stored as an EvalRun.

- :mod:`feedback.evals.metrics` — per-item scores and the summary (retrieval, citations, correctness,
  abstention, latency, cost);
- :mod:`feedback.evals.judge` — the LLM judge with a fixed rubric (only with an API key);
- :mod:`feedback.evals.answerer` — the :class:`~feedback.evals.answerer.Answerer` Protocol the bot implements;
- :mod:`feedback.evals.runner` — running releases over a golden set, comparing two, storing runs;
- :mod:`feedback.evals.report` — terminal table, JSON and a self-contained HTML page with SVG charts.
"""
