"""Prometheus metrics of one daemon (prometheus-client), on a registry of its own.

A registry per daemon, not the global one, so that tests and tools can run several daemons in one process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PREFIX = "cekura_scheduler"


class Metrics:
    """Every number the daemon exports; the daemon calls these as things happen."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.fires = Counter(
            f"{PREFIX}_fires", "Fires that reached an outcome, by job and outcome.", ["job", "outcome"], registry=r
        )
        self.skipped = Counter(
            f"{PREFIX}_skipped_slots", "Slots not submitted, by job and reason.", ["job", "reason"], registry=r
        )
        self.submission_errors = Counter(
            f"{PREFIX}_submission_errors", "Submissions Cekura did not take, by kind.", ["kind"], registry=r
        )
        self.fire_lag = Histogram(
            f"{PREFIX}_fire_lag_seconds",
            "From the scheduled slot to the claim, before the POST.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.in_flight = Gauge(f"{PREFIX}_results_in_flight", "Results this daemon follows now.", registry=r)
        self.polls = Counter(
            f"{PREFIX}_poll_requests", "Result reads, by answer (a status, or error).", ["status"], registry=r
        )
        self.alert_deliveries = Counter(
            f"{PREFIX}_alert_deliveries", "Alert deliveries, by channel and status.", ["channel", "status"], registry=r
        )
        self.config_reloads = Counter(f"{PREFIX}_config_reloads", "Config reloads, by result.", ["result"], registry=r)
        self.open_incidents = Gauge(f"{PREFIX}_open_incidents", "Incidents open now.", registry=r)
        self.up = Gauge(f"{PREFIX}_up", "1 while the scheduler loop runs.", registry=r)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
