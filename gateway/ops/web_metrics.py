"""The web smiley's metrics, exposed at 0 when [web] is off so no panel says "no data"."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric

from gateway.ops.views import WebCountersView


def web_metrics(web: WebCountersView | None) -> Iterator[Metric]:
    """Web smiley requests: presses taken once, resends, refusals by reason, rate limited."""
    yield CounterMetricFamily(
        "smiley_web_requests", "Web smiley press requests read", value=web.requests if web else 0
    )
    yield CounterMetricFamily(
        "smiley_web_presses",
        "Web smiley presses committed (each once)",
        value=web.presses if web else 0,
    )
    yield CounterMetricFamily(
        "smiley_web_presses_resent",
        "Web smiley presses sent again, taken before",
        value=web.resent if web else 0,
    )
    yield CounterMetricFamily(
        "smiley_web_rate_limited",
        "Web smiley requests answered 429",
        value=web.rate_limited if web else 0,
    )
    refused = CounterMetricFamily(
        "smiley_web_refused", "Web smiley requests refused whole, by reason", labels=["reason"]
    )
    for reason, n in sorted((web.refused if web else {}).items()):
        refused.add_metric([reason], n)
    yield refused
