"""Every place Deskmate touches the Langfuse SDK's private state, in one module (checked with langfuse 5.2).

Why it is needed: ``Langfuse(...)`` does not own its machinery. It asks ``LangfuseResourceManager`` for the
bundle (tracer provider binding, span processor, score thread, REST client) cached per *public key* for the
whole process in the class dict ``LangfuseResourceManager._instances``, and a cached bundle is returned as is,
whatever host, tracer provider or exporter the new client was given. A :class:`~bot.tracing.Tracer` must have
its own (its host, its provider, its outage reporting), and a tracer started after another one shut down must
not inherit that dead bundle (scores dropped as "client has been shut down", spans never exported).

The SDK's public API offers no way out: there is no constructor flag to skip the cache,
``Langfuse.shutdown()`` stops the bundle but leaves it cached, ``get_client()`` only reads the cache, and
``LangfuseResourceManager.reset()`` shuts down *every* client in the process. The cache key is the public key,
which the SDK also sends as the API user name and as an OTLP scope attribute, so a different key is no way
out either. Hence :func:`new_unshared_client` and :func:`forget_client` edit the cache, under the SDK's own
lock; :func:`bound_tracer_provider` reads which provider a client's bundle really uses.

When the SDK changes: if ``_instances``/``_lock`` disappear, these functions fall back to plain
``Langfuse(...)`` and do nothing on release. A second tracer with the same key in one process (tests, a
restarted tracer) may then get a cached bundle bound to another provider; :class:`~bot.tracing.Tracer` checks
:func:`bound_tracer_provider` against its own and, on a mismatch, logs ``langfuse_init_failed`` and stays
inert rather than exporting to the wrong host. One tracer per process, the production case, is unaffected.
``tests/bot/tracing/test_tracer.py::test_tracers_sharing_keys_keep_to_their_own_host`` fails first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Importing langfuse has side effects (a handler on the httpx logger), so this module imports it only inside
# the code that runs once tracing is on (hence `noqa: PLC0415`), and here for the type checker.
if TYPE_CHECKING:
    from langfuse import Langfuse
    from opentelemetry.sdk.trace import TracerProvider


def sdk_tracer_name() -> str:
    """Name of the SDK's OpenTelemetry tracer; its span processor exports only spans of that scope."""
    try:
        from langfuse._client.constants import LANGFUSE_TRACER_NAME  # noqa: PLC0415 - lazy, see top
    except ImportError:  # pragma: no cover - the constant moved in a later SDK
        return "langfuse-sdk"
    return LANGFUSE_TRACER_NAME


def new_unshared_client(**kwargs: Any) -> Langfuse:
    """``Langfuse(**kwargs)`` with a fresh bundle: any cached bundle of the same public key is dropped first.

    A dropped bundle keeps working for the client that holds it (another tracer still running); it is only
    no longer handed out. Dropping and creating happen under the SDK's lock, so no other thread can slip a
    bundle of the same key in between.
    """
    from langfuse import Langfuse  # noqa: PLC0415 - lazy, see top

    try:
        from langfuse._client.resource_manager import LangfuseResourceManager  # noqa: PLC0415

        lock, instances = LangfuseResourceManager._lock, LangfuseResourceManager._instances
    except (ImportError, AttributeError):  # the SDK changed: the tracer's provider check is the safety net
        return Langfuse(**kwargs)
    with lock:  # an RLock: Langfuse(...) takes it again to cache the new bundle
        instances.pop(kwargs["public_key"], None)
        return Langfuse(**kwargs)


def forget_client(client: Langfuse) -> None:
    """Drop the client's bundle from the SDK's cache if it is still the cached one (after its shutdown)."""
    try:
        from langfuse._client.resource_manager import LangfuseResourceManager  # noqa: PLC0415

        resources = getattr(client, "_resources", None)
        if resources is None:
            return
        public_key = resources.public_key
        with LangfuseResourceManager._lock:
            if LangfuseResourceManager._instances.get(public_key) is resources:
                del LangfuseResourceManager._instances[public_key]
    except Exception:  # private SDK state of another shape: leave it alone
        pass


def bound_tracer_provider(client: Langfuse, expected: TracerProvider) -> TracerProvider | None:
    """The provider the client's spans go through: ``None`` if the SDK's tracing is off
    (``LANGFUSE_TRACING_ENABLED=false``), ``expected`` if the SDK no longer says."""
    resources = getattr(client, "_resources", None)
    provider: TracerProvider | None = getattr(resources, "tracer_provider", expected)
    return provider
