"""Prometheus metrics of one app instance, in a registry of its own (see
:mod:`services.common.metrics`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common.metrics import RequestMetrics

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class InferenceMetrics:
    """The service's counters and histograms, registered in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        prefix = "fedmedclip_inference"
        self.http = RequestMetrics(
            self.registry,
            requests=(f"{prefix}_requests", "HTTP requests by route and status code."),
            latency=(f"{prefix}_request_seconds", "HTTP request latency by route."),
            buckets=LATENCY_BUCKETS,
        )
        self.batch_size = Histogram(
            f"{prefix}_batch_size",
            "Images per forward pass (micro-batching groups concurrent requests).",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            f"{prefix}_errors",
            "Refused or failed requests by kind (the problem code of the answer).",
            ["kind"],
            registry=self.registry,
        )
        self.predictions = Counter(
            f"{prefix}_predictions",
            "Images classified.",
            registry=self.registry,
        )
        self.reloads = Counter(
            f"{prefix}_model_reloads",
            "Model (re)load attempts by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.global_version = Gauge(
            f"{prefix}_global_version",
            "Global adapter version being served (-1 before a model is loaded).",
            registry=self.registry,
        )
        self.head_version = Gauge(
            f"{prefix}_head_version",
            "Private head version being served (-1 before a model is loaded).",
            registry=self.registry,
        )
        version = ["global_version", "head_version"]
        self.drift_state = Gauge(
            f"{prefix}_drift_state",
            "Embedding drift of a model version: 1 drift, 0 ok, -1 unknown or too few images.",
            version,
            registry=self.registry,
        )
        self.drift_mmd = Gauge(
            f"{prefix}_drift_mmd",
            "MMD² between recent embeddings and the head's training sample.",
            version,
            registry=self.registry,
        )
        self.prior_distance = Gauge(
            f"{prefix}_class_prior_distance",
            "Total variation distance of predicted classes from the training class prior.",
            version,
            registry=self.registry,
        )
        self.monitored = Gauge(
            f"{prefix}_monitored_predictions",
            "Predictions of a model version since the service started.",
            version,
            registry=self.registry,
        )
        self.feedback = Gauge(
            f"{prefix}_feedback",
            "Running clinician-feedback metrics of a model version "
            "(labelled, accuracy, balanced_accuracy, ece).",
            [*version, "metric"],
            registry=self.registry,
        )
        self.global_version.set(-1)
        self.head_version.set(-1)
