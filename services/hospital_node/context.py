"""What one running node API holds: settings, database, job runner, metrics."""

from __future__ import annotations

from dataclasses import dataclass

from fedmedclip.model_store import ModelStore
from services.hospital_node.db import Database
from services.hospital_node.jobs import JobRunner
from services.hospital_node.metrics import NodeMetrics
from services.hospital_node.settings import NodeSettings


@dataclass
class NodeContext:
    settings: NodeSettings
    db: Database
    runner: JobRunner
    metrics: NodeMetrics

    @property
    def store(self) -> ModelStore:
        return ModelStore(self.settings.model_store_dir)
