"""What ``GET /metrics`` reports: counters of one ``ca serve`` process in the Prometheus text
format (version 0.0.4), for the monitoring of a fleet of replicas.

Everything is counted from the access-log line of each request (the same fields, so the log and
the metrics never disagree) plus two gauges read at scrape time. Label values come from closed
sets only (route kinds (cmp, ocsp, est, ca, crl, health, metrics, other), HTTP statuses, CMP body types of the ASN.1 schema, PKIFailureInfo
names), so no client can grow the series without bound. No subject, reference, serial or
address is ever a label.

::

    tokenissue_http_requests_total{route,status}      every HTTP request answered
    tokenissue_cmp_messages_total{body,outcome}       CMP requests by body type (ir, kur, certConf,
                                                      rr, ... or "unparsed") and outcome ("ok" or
                                                      the failInfo name sent back)
    tokenissue_cmp_shed_total                         CMP requests refused past --max-concurrent
    tokenissue_certificates_issued_total              certificates this process signed over CMP or
                                                      EST (a repeated CMP message handed back its
                                                      certificate: not counted again)
    tokenissue_cmp_request_seconds (histogram)        time to answer a CMP request
    tokenissue_cmp_in_progress                        CMP, OCSP and EST requests being handled now
    tokenissue_ca_not_after_timestamp_seconds         when the CA certificate expires (Unix time)
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Upper bounds of the latency histogram, in seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ISSUING = frozenset({"ir", "cr", "kur", "p10cr"})


class Metrics:
    """Counters fed with each access-log line (:meth:`observe`), rendered by :meth:`render`."""

    def __init__(self, *, routes: Callable[[str], str]) -> None:
        self._route_of = routes
        self._lock = threading.Lock()
        self._http: Counter[tuple[str, str]] = Counter()
        self._cmp: Counter[tuple[str, str]] = Counter()
        self._shed = 0
        self._issued = 0
        self._buckets = [0] * (len(BUCKETS) + 1)  # the last is +Inf
        self._seconds = 0.0

    def observe(self, line: Mapping[str, Any]) -> None:
        """Count one answered request, given its access-log fields."""
        route = self._route_of(str(line.get("path") or ""))
        with self._lock:
            self._http[(route, str(line.get("status")))] += 1
            if route == "est" and line.get("status") == 200 and line.get("serial"):
                self._issued += 1  # an EST client repeating a request is counted again
            if route != "cmp" or not line.get("cmp"):
                return
            if line.get("shed"):
                self._shed += 1
                return
            body = str(line.get("cmp_body") or "unparsed")
            outcome = str(line.get("failure_info") or "ok")
            self._cmp[(body, outcome)] += 1
            if body in _ISSUING and outcome == "ok" and line.get("serial") and not line.get("repeated"):
                self._issued += 1
            seconds = float(line.get("ms") or 0.0) / 1000
            self._seconds += seconds
            self._buckets[next((i for i, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))] += 1

    def render(self, *, in_progress: int, ca_not_after: float) -> str:
        with self._lock:
            return "".join(self._lines(in_progress, ca_not_after))

    def _lines(self, in_progress: int, ca_not_after: float) -> Iterator[str]:
        yield from _family("tokenissue_http_requests_total", "counter", "HTTP requests answered, by route and status.",
                           [({"route": r, "status": s}, n) for (r, s), n in sorted(self._http.items())])  # fmt: skip
        yield from _family("tokenissue_cmp_messages_total", "counter",
                           "CMP requests answered, by body type and outcome (ok, or the failInfo sent back).",
                           [({"body": b, "outcome": o}, n) for (b, o), n in sorted(self._cmp.items())])  # fmt: skip
        yield from _family("tokenissue_cmp_shed_total", "counter",
                           "CMP requests refused with 503 because the most allowed at once were in progress.", [({}, self._shed)])  # fmt: skip
        yield from _family("tokenissue_certificates_issued_total", "counter",
                           "Certificates signed by this process.", [({}, self._issued)])  # fmt: skip
        yield "# HELP tokenissue_cmp_request_seconds Time to answer a CMP request.\n"
        yield "# TYPE tokenissue_cmp_request_seconds histogram\n"
        cumulative = 0
        for bound, n in zip([*(_number(b) for b in BUCKETS), "+Inf"], self._buckets, strict=True):
            cumulative += n
            yield f'tokenissue_cmp_request_seconds_bucket{{le="{bound}"}} {cumulative}\n'
        yield f"tokenissue_cmp_request_seconds_sum {_number(self._seconds)}\n"
        yield f"tokenissue_cmp_request_seconds_count {cumulative}\n"
        yield from _family("tokenissue_cmp_in_progress", "gauge", "CMP requests being handled now.", [({}, in_progress)])
        yield from _family("tokenissue_ca_not_after_timestamp_seconds", "gauge",
                           "When the CA certificate expires, in seconds since the Unix epoch.",
                           [({}, ca_not_after)])  # fmt: skip


def _family(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> Iterator[str]:
    yield f"# HELP {name} {help_text}\n"
    yield f"# TYPE {name} {kind}\n"
    for labels, value in samples:
        shown = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        yield f"{name}{{{shown}}} {_number(value)}\n" if shown else f"{name} {_number(value)}\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
