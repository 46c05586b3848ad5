"""Deskmate's configuration: one ``Settings`` object read from ``DESKMATE_*`` environment variables.

Every field is documented in the README's configuration table; a ``.env`` file in the working directory is
read too. Values that depend on others (the database URL under the data directory, say) are resolved by the
``*_resolved`` helpers so that the raw settings stay what the operator wrote.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The salt of pseudonymous user ids in development; a production process refuses to start with it.
DEVELOPMENT_SALT = "deskmate-development-salt"

#: The bundled sample knowledge base (a fictional company's handbook).
SAMPLE_KNOWLEDGE_DIR = Path(__file__).resolve().parents[2] / "knowledge" / "sample"


class ModelPrice(BaseModel):
    """US dollars per million tokens for one model."""

    input: float
    output: float
    cache_read: float
    cache_write: float


#: Published list prices (USD per million tokens; cache write = the 5-minute cache). Override with
#: DESKMATE_MODEL_PRICES='{"model": {"input": …, "output": …, "cache_read": …, "cache_write": …}}'.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "claude-sonnet-5-5": ModelPrice(input=2.0, output=10.0, cache_read=0.20, cache_write=2.50),
    "claude-sonnet-5": ModelPrice(input=2.0, output=10.0, cache_read=0.20, cache_write=2.50),
    "claude-sonnet-4-6": ModelPrice(input=3.0, output=15.0, cache_read=0.30, cache_write=3.75),
    "claude-sonnet-4-5": ModelPrice(input=3.0, output=15.0, cache_read=0.30, cache_write=3.75),
    "claude-haiku-4-5": ModelPrice(input=1.0, output=5.0, cache_read=0.10, cache_write=1.25),
}


class Settings(BaseSettings):
    """All of Deskmate's settings. Environment variables are the field names upper-cased, ``DESKMATE_``-prefixed."""

    model_config = SettingsConfigDict(env_prefix="DESKMATE_", env_file=".env", extra="ignore")

    # --- process and storage -------------------------------------------------------------------------
    data_dir: Path = Field(Path("./data"), description="Everything the embedded default writes lives here.")
    environment: Literal["development", "production"] = Field("development", description="production: JSON logs.")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: Literal["console", "json", "auto"] = Field(
        "auto", description="auto = json in production, console in development."
    )
    log_message_text: bool = Field(False, description="Write users' message text to logs (off by default).")
    user_hash_salt: str = Field(
        DEVELOPMENT_SALT,
        description="Secret key of the pseudonymous user ids stored and traced (HMAC-SHA256). Set a long random "
        "value before going live; changing it later makes earlier votes unattributable.",
    )
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite file under data_dir.")
    redis_url: str | None = Field(
        None, description="redis:// or unix:// URL; unset = start an embedded redis-server under data_dir."
    )
    redis_read_timeout_s: float = Field(
        15.0, ge=2, description="A Redis reply that has not come in this long means the connection is dead (a host "
                                "gone without a reset, a firewall dropping it): the command fails and is handled "
                                "as Redis lost, instead of waiting forever.")
    redis_server: str | None = Field(
        None, description="The redis-server or valkey-server binary the embedded default starts; unset = "
        "valkey-server or redis-server from PATH (scripts/setup.sh installs one).",
    )
    chroma_url: str | None = Field(None, description="http(s)://host:port of a Chroma server; unset = embedded.")
    web_host: str = Field("127.0.0.1", description="Address the web process listens on (0.0.0.0 in a container).")
    web_port: int = Field(8000, description="Port of the web process.")

    # --- knowledge -----------------------------------------------------------------------------------
    knowledge_dir: Path = Field(SAMPLE_KNOWLEDGE_DIR, description="Folder ingested by `deskmate run`.")
    kb_name: str = Field("default", description="Name of the index (a knowledge base) used by default.")
    sources_file: Path = Field(Path("sources.yaml"), description="YAML list of knowledge sources (folder, git, "
                               "website, confluence, google_drive, sharepoint, notion) synced by `deskmate source "
                               "sync` (docs/sources.md); absent = none.")
    sources_scheduler: bool = Field(True, description="The worker syncs each source of DESKMATE_SOURCES_FILE on "
                                    "its own schedule (false: only `deskmate source sync`).")
    sources_max_change_share: float = Field(0.3, description="A sync that would delete or change more than this "
                                            "share of a source (of 10+ documents), or in which more than "
                                            "this share comes back empty or unreadable, is held and alerted; 1 = "
                                            "off.")
    sources_shared_embedding: bool = Field(True, description="A sync's embedding work is shared with every running "
                                           "worker through the queue (docs/sources.md); off = the syncing process "
                                           "embeds alone.")
    doc_base_url: str | None = Field(None, description="Base URL that makes a document's path citable.")
    max_document_bytes: int = Field(5_000_000, description="Larger files are skipped at ingestion, with a reason.")
    chunk_words: int = Field(180, description="Target words per chunk.")
    chunk_overlap_words: int = Field(30, description="A short last paragraph is repeated in the next chunk up to this size.")
    index_keep_versions: int = Field(3, description="How many older index versions are kept for rollback.")
    embedding_backend: Literal[
        "onnx-minilm-int8", "use-multilingual-v3", "multilingual-e5-small-q4", "sentence-transformers"
    ] = Field(
        "onnx-minilm-int8",
        description="Main embedding model: the bundled int8 ONNX MiniLM (English; questions in other languages use "
        "DESKMATE_EMBEDDING_CROSSLINGUAL); use-multilingual-v3 or multilingual-e5-small-q4 (optional extra "
        "multilingual-e5) alone; or sentence-transformers. A change needs a re-ingest (docs/retrieval.md).",
    )
    embedding_model: str = Field(
        "sentence-transformers/all-MiniLM-L6-v2",
        description="Model name for the sentence-transformers backend (must be available offline).",
    )
    embedding_batch_size: int = Field(
        8, description="Texts per embedding batch (8: as fast as 32 on 2 cores, peak RSS 0.65 GB not 1.8 GB)."
    )
    embedding_max_tokens: int = Field(256, description="Token limit per text (trained at 128; 256 keeps more of a long chunk, see docs/benchmarks.md).")
    embedding_threads: int = Field(0, description="ONNX intra-op threads; 0 = one per core.")
    search_processes: int = Field(1, ge=0, le=16, description="Child processes in which the worker searches; they "
                                  "load the embedders and the index, and the worker's event loop keeps the interpreter "
                                  "under load (docs/benchmarks.md). 0: searches run in threads of the worker's process.")
    embedding_crosslingual: Literal["use-multilingual-v3", "off"] = Field(
        "use-multilingual-v3",
        description="Second embedder for questions not in the documents' language: each chunk is also embedded "
                    "with it, and such a question is searched with those vectors (docs/retrieval.md). 'off': one "
                    "embedder (unused when the main backend is itself multilingual).",
    )

    # --- retrieval (defaults of the first release; releases carry their own) --------------------------
    retrieval_k: int = Field(6, description="Passages given to the model (first release; releases carry their own).")
    retrieval_candidates: int = Field(40, description="Candidates taken from each retriever before fusion.")
    retrieval_min_score: float = Field(
        0.3, description="Raw-cosine 'not found' cut-off, used only where there is no calibration (index versions "
                         "built before it, releases made before it)."
    )
    retrieval_not_found_level: float = Field(
        0.75, ge=0.0, le=1.0,
        description="'Not found' unless the best passage is closer to the question than this share of unrelated "
                    "questions get (calibrated per index version, embedder and language: docs/retrieval.md).",
    )

    # --- LLM -----------------------------------------------------------------------------------------
    anthropic_api_key: str | None = Field(None, description="Claude API key; unset = cited extractive answers.")
    anthropic_base_url: str | None = Field(None, description="Override the Anthropic API URL (proxies, tests).")
    anthropic_model: str = Field("claude-sonnet-5-5", description="Model of the first release.")
    llm_max_tokens: int = Field(1024, description="Longest answer, in tokens.")
    llm_temperature: float = Field(0.0, description="Kept in releases; the current SDK sends no sampling parameters.")
    llm_timeout_s: float = Field(30.0, description="Per LLM attempt, in seconds.")
    llm_max_retries: int = Field(2, description="Retries of 429/5xx/overloaded/timeouts before the fallback.")
    llm_max_concurrent: int = Field(
        0, ge=0, description="Answers one worker has the model write at once; 0 = as many as it holds "
        "(worker_max_jobs). Below worker_max_jobs, the answers over it search while they wait for a model call to "
        "end, so a call that ends is followed at once by one ready to start; it also keeps a worker within the "
        "provider's concurrency limit. A wait for the model counts towards job_timeout_s.")
    breaker_failure_threshold: int = Field(5, description="Consecutive LLM failures that open the breaker.")
    breaker_cooldown_s: float = Field(30.0, description="How long the breaker stays open before a trial call.")
    model_prices: dict[str, ModelPrice] = Field(
        default_factory=lambda: dict(DEFAULT_PRICES), description="JSON price table per model (USD per million tokens)."
    )
    history_turns: int = Field(6, description="Earlier turns of a thread sent with a follow-up.")
    query_rewrite: Literal["auto", "llm", "offline", "off"] = Field(
        "auto", description="Search query of the first release (releases carry their own): llm = a fast model "
        "rewrites every message into a standalone query (in the documents' language); auto = only when the thread "
        "has history or the message is in another language; offline = the history-aware query of "
        "knowledge/query.py; off = the message alone. llm and auto fall back to offline without the model.",
    )
    query_rewrite_model: str = Field("claude-haiku-4-5", description="Model of the query rewrite (first release).")
    query_rewrite_timeout_s: float = Field(5.0, gt=0, description="Per query-rewrite attempt, in seconds.")
    query_rewrite_max_retries: int = Field(
        1, ge=0, le=1, description="Retries of a failed query rewrite (0 or 1) before the offline query is used.")
    documents_language: str = Field(
        "en", description="Language of the documents (ISO 639-1): the query rewrite writes queries in it, and a "
                          "question in another language is searched with the cross-lingual vectors.")
    max_question_chars: int = Field(4000, description="Longer messages are refused with a clear reply.")

    # --- tracing -------------------------------------------------------------------------------------
    langfuse_public_key: str | None = Field(None, description="Langfuse project key; with the secret, every answer is traced.")
    langfuse_secret_key: str | None = Field(None, description="Langfuse secret key.")
    langfuse_host: str = Field("https://cloud.langfuse.com", description="Langfuse server URL.")

    # --- evaluation and the promotion quality gate (feedback/evals, feedback/gate.py) ----------------
    gate_enabled: bool = Field(True, description="`release promote` runs the quality gate first.")
    gate_dataset: Path | None = Field(
        None, description="Golden set (JSONL) the gate evaluates on; unset = the bundled sample golden set."
    )
    gate_tolerances: dict[str, float] = Field(
        default_factory=dict,
        description="Allowed drop per quality metric, in absolute points (JSON), merged over the defaults in "
        "feedback/gate.py, e.g. {\"answer_f1\": 0.02}.",
    )
    gate_latency_increase: float = Field(0.5, description="Allowed relative growth of p95 latency (0.5 = +50%).")
    gate_latency_slack_ms: float = Field(250.0, description="Latency growth always allowed (timing noise).")
    gate_cost_increase: float = Field(0.25, description="Allowed relative growth of the cost per answer.")
    eval_judge: bool = Field(True, description="Grade answers with an LLM judge when an API key is set.")
    eval_judge_model: str | None = Field(None, description="Model of the LLM judge; unset = anthropic_model.")
    eval_concurrency: int = Field(0, description="Items evaluated at once; 0 = 4 with an API key, else 1.")

    # --- queue and worker ----------------------------------------------------------------------------
    worker_max_jobs: int = Field(100, description="Answers one worker process holds in flight.")
    job_timeout_s: float = Field(120.0, description="An answer job running longer is cancelled and retried.")
    job_max_tries: int = Field(3, description="Attempts per question before the user is told it failed.")
    worker_poll_delay_s: float = Field(0.05, description="arq's queue poll interval (its default 0.5 s is slow).")
    worker_lease_s: float = Field(
        15.0, gt=0, description="A running job is held this long unless its worker renews it: a killed worker's "
        "question moves to another worker within this time (arq's own hold: job timeout + 10 s).")
    worker_lease_renew_s: float = Field(
        5.0, gt=0, description="How often a worker renews its running jobs' leases (well under worker_lease_s).")
    worker_redis_retry_max_s: float = Field(
        5.0, gt=0, description="Longest wait between a worker's reconnection attempts while Redis is unreachable.")
    sweeper_interval_s: float = Field(15.0, description="How often pending questions with no job are re-enqueued.")
    sweeper_min_age_s: float = Field(10.0, description="A pending question younger than this is left alone.")

    # --- delivery: the answer to Slack/Teams, its own retried step (bot/pipeline.py) -------------------
    delivery_deadline_s: float = Field(
        900.0, gt=0, description="A reply that cannot be delivered (5xx, 429, outage) is retried for this long "
        "after it was answered, across worker restarts, then recorded as failed.")
    delivery_backoff_s: float = Field(
        2.0, gt=0, description="First wait before retrying a failed delivery; doubles each try (a Retry-After wins).")
    delivery_backoff_max_s: float = Field(60.0, gt=0, description="Longest wait between delivery retries.")
    delivery_retry_after_max_s: float = Field(
        300.0, gt=0, description="Longest Retry-After a delivery honours (a longer one is waited this long).")
    streaming: Literal["on", "off"] = Field(
        "on", description="Stream answers as they are written (Slack threads, Teams personal chats, the local chat); "
        "off = the placeholder is replaced by the whole answer.")

    # --- Slack ---------------------------------------------------------------------------------------
    slack_bot_token: str | None = Field(None, description="xoxb- token of the Slack app.")
    slack_signing_secret: str | None = Field(None, description="Slack signing secret (HTTP mode).")
    slack_app_token: str | None = Field(None, description="xapp- token; set it to use Socket Mode.")
    slack_api_url: str = Field("https://slack.com/api/", description="Slack Web API base URL (tests override).")
    slack_command: str = Field("/deskmate", description="Name of the slash command.")
    slack_support_channel: str | None = Field(None, description="Where 'Ask a human' posts (channel id).")
    slack_answer_bots: bool = Field(False, description="Answer messages written by other bots.")
    slack_post_interval_s: float = Field(1.0, description="Pace of chat.postMessage per channel (Slack: ~1/s).")
    slack_post_burst: int = Field(3, description="Messages a channel may get at once before pacing applies.")
    slack_rate_limit_retries: int = Field(3, description="Retries of a Web API call answered 429 (after Retry-After).")
    slack_max_retry_after_s: float = Field(60.0, description="A longer Retry-After fails the call instead of waiting.")

    # --- Teams ---------------------------------------------------------------------------------------
    teams_app_id: str | None = Field(None, description="Azure bot app id; unset = local development mode (no JWT).")
    teams_app_password: str | None = Field(None, description="Azure bot client secret.")
    teams_tenant_id: str | None = Field(None, description="Tenant id for single-tenant bots.")
    teams_app_type: Literal["MultiTenant", "SingleTenant", "UserAssignedMSI"] = Field(
        "MultiTenant", description="Azure bot type."
    )
    teams_app_name: str = Field("Deskmate", description="The bot's name in Teams (app package, greeting).")
    teams_support_channel: str | None = Field(
        None, description="Teams channel id (19:…@thread.tacv2) where 'Ask a human' starts a thread."
    )
    teams_delivery_attempts: int = Field(6, description="Tries per proactive send/update (429, 412, 5xx retried).")
    teams_delivery_backoff_s: float = Field(1.0, description="First retry delay; doubles each try, capped at 30 s.")

    # --- playbooks -----------------------------------------------------------------------------------
    admin_user_ids: list[str] = Field(default_factory=list, description="Platform user ids allowed to run admin commands.")
    admin_channel: str | None = Field(None, description="Slack channel id for alerts.")
    daily_budget_usd: float | None = Field(None, description="LLM spend per UTC day before retrieval-only.")
    maintenance_message: str = Field(
        "Deskmate is paused for maintenance. Please ask the support team directly; your question was recorded.",
        description="Reply when the kill-switch is off.",
    )
    dashboard_token: str | None = Field(None, description="Bearer token for the admin dashboard.")
    alert_downvote_window: int = Field(20, description="👎 rate is measured over this many latest rated answers.")
    alert_downvote_rate: float = Field(0.4, description="Alert when the 👎 share of those answers reaches this.")
    alert_window_minutes: float = Field(15.0, description="Window for the fallback and error rates.")
    alert_fallback_rate: float = Field(0.3, description="Alert when this share of LLM answers fell back.")
    alert_error_rate: float = Field(0.1, description="Alert when this share of questions ended in an error.")
    alert_min_samples: int = Field(10, description="No rate alert on fewer answers (or votes) than this.")
    alert_cooldown_minutes: float = Field(60.0, description="The same alert is not re-sent within this time.")
    guard_check_interval_s: float = Field(10.0, description="Rate checks run at most this often (all workers).")
    canary_min_answers: int = Field(
        300, description="A canary is promoted only after its candidate arm gave this many answers (and is not worse).")
    canary_max_hours: float = Field(72.0, description="A canary still undecided after this long ends inconclusive.")
    canary_alpha: float = Field(
        0.05, description="Error budget of the canary's sequential test: chance of a false rollback (and of a false "
        "promotion) over the whole canary, however often it is checked (split over the guard metrics).")
    canary_margins: dict[str, float] = Field(
        default_factory=lambda: {"downvote": 0.1, "error": 0.02, "fallback": 0.05, "latency": 0.2, "cost": 0.2},
        description="How much worse a candidate may be and still be promoted, per guard metric: 👎 share of rated "
        "answers, error and fallback rates (absolute), latency and cost per answer (relative: 0.2 = 20 %).")
    canary_check_interval_s: float = Field(
        5.0, description="The canary decision runs at most this often across all workers (after answers and by cron).")
    canary_shadow_sample: float = Field(
        0.2, description="Shadow canary: the share of live questions the candidate also answers in the background.")
    canary_shadow_budget_usd: float = Field(
        5.0, description="Shadow canary: LLM spend of the background answers after which it stops sampling.")

    # --- learned answers (playbooks/learned.py, docs/learned-answers.md) -------------------------------
    learned_answers: bool = Field(
        True, description="A support person's reply to an 'Ask a human' thread (or a 👎 correction by a knowledge "
        "owner) becomes a draft answer that a knowledge owner reviews; approved ones are cited (docs/learned-answers.md).")
    knowledge_owners: dict[str, list[str]] = Field(
        default_factory=dict, description="Who reviews learned answers, per knowledge set (JSON; \"*\" = every set), "
        "e.g. {\"it\": [\"U0123\"], \"*\": [\"<Teams AAD object id>\"]}. Admins (DESKMATE_ADMIN_USER_IDS) may review too.")
    learned_teams: dict[str, str] = Field(
        default_factory=dict, description="The team named in a learned answer's citation ('Answered by <team> on "
        "<date>') per knowledge set (JSON; \"*\" = the rest); unset = 'the support team'.")
    learned_review_days: int = Field(
        180, description="An approved learned answer leaves the index this many days after its review and waits "
        "for a new one (re-approve or reject).")

    # --- the local chat page (/chat, bot/local_chat) -----------------------------------------------
    local_chat: Literal["auto", "on", "off"] = Field(
        "auto", description="The /chat page and its API: auto = on in development, off in production (not mounted); "
        "on in production needs a signed-in user (the dashboard's SSO header or token).",
    )
    local_chat_sources: Literal["auto", "public", "all"] = Field(
        "auto", description="What /chat may cite: public (as a public channel: never restricted documents) or all "
        "(as a DM); auto = all in development, public in production.",
    )

    # --- operations: metrics and the admin dashboard (bot/metrics.py, playbooks/dashboard) -----------
    worker_metrics_port: int = Field(0, description="Port of a worker's /metrics server (bound on web_host); 0 = off.")
    metrics_token: str | None = Field(None, description="Bearer token /metrics requires; unset = open (keep it off the internet).")
    metrics_cache_s: float = Field(5.0, description="Database and Redis figures in /metrics are re-read at most this often.")
    dashboard_sso_header: str | None = Field(
        None, description="Header naming the signed-in user (e.g. X-Forwarded-Email), trusted when set: only behind "
        "a proxy that sets it and strips it from clients."
    )

    # ------------------------------------------------------------------------------------------------
    def production_problems(self) -> list[str]:
        """Settings a production process must not start with (the CLI refuses to start and says why)."""
        problems: list[str] = []
        if self.environment == "production" and self.user_hash_salt == DEVELOPMENT_SALT:
            problems.append("DESKMATE_USER_HASH_SALT is the public development value: set a long random secret "
                            "(e.g. `openssl rand -hex 32`) — user pseudonyms and local-chat tokens are keyed by it")
        return problems

    def database_url_resolved(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'deskmate.db').resolve()}"

    def chroma_path(self) -> Path:
        return self.data_dir / "chroma"

    def sources_work_dir(self) -> Path:
        """Mirrors, cursors and clones of the knowledge sources (docs/sources.md)."""
        return self.data_dir / "sources"

    def learned_dir(self) -> Path:
        """Approved learned answers as Markdown, per knowledge base (read by every index build)."""
        return self.data_dir / "learned"

    def index_dir(self) -> Path:
        """BM25 files and index metadata per knowledge base and version."""
        return self.data_dir / "index"

    def langfuse_enabled(self) -> bool:
        return bool(self.langfuse_public_key and self.langfuse_secret_key)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once. Tests build their own ``Settings`` instead."""
    return Settings()
