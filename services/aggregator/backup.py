"""What a hub backup holds: its database, which also holds every model blob and update
payload (see ``db/models.py``), so the archive has no folders besides the tables."""

from __future__ import annotations

from services.aggregator.db.migrate import MIGRATIONS
from services.common.backup import BackupSpec

BACKUP = BackupSpec(service="aggregator", migrations=MIGRATIONS)
