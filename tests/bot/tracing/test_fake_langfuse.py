"""The fake Langfuse itself: OTLP/JSON accepted, Basic auth checked."""

from __future__ import annotations

import httpx

from tests.fakes.langfuse_server import start_fake_langfuse


def test_fake_langfuse_accepts_otlp_json_and_checks_auth() -> None:
    with start_fake_langfuse() as fake:
        export = {
            "resourceSpans": [{
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "x"}}]},
                "scopeSpans": [{
                    "scope": {"name": "manual"},
                    "spans": [{
                        "traceId": "0af7651916cd43dd8448eb211c80319c",
                        "spanId": "b7ad6b7169203331",
                        "parentSpanId": "00f067aa0ba902b7",
                        "name": "answer",
                        "startTimeUnixNano": "1000000",
                        "endTimeUnixNano": "3000000",
                        "attributes": [
                            {"key": "user.id", "value": {"stringValue": "abc"}},
                            {
                                "key": "langfuse.trace.tags",
                                "value": {"arrayValue": {"values": [{"stringValue": "a"}]}},
                            },
                        ],
                    }],
                }],
            }]
        }
        url = f"{fake.url}/api/public/otel/v1/traces"
        assert httpx.post(url, json=export, auth=(fake.public_key, fake.secret_key)).status_code == 200
        assert httpx.post(url, json=export, auth=(fake.public_key, "nope")).status_code == 401
        assert httpx.get(f"{fake.url}/api/public/health").json()["status"] == "OK"

        (span,) = fake.spans
        assert (span.name, span.trace_id, span.span_id, span.parent_span_id) == (
            "answer", "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "00f067aa0ba902b7")
        assert span.attributes == {"user.id": "abc", "langfuse.trace.tags": ["a"]}
        assert span.duration_ms == 2.0 and span.resource == {"service.name": "x"}
        assert fake.unauthorized == 1
