"""What a node backup holds: its database (datasets, jobs, the privacy ledger whose loss
would reset the site's epsilon) and the model store (global models and the site's heads).

The feature cache is left out: it is derived from the images and rebuilt on the next job.
The images themselves stay where the hospital keeps them (the data roots), under its own
backups; a dataset row only records where they are.
"""

from __future__ import annotations

from services.common.backup import BackupSpec, FileTree
from services.hospital_node.db import MIGRATIONS
from services.hospital_node.settings import NodeSettings


def backup_spec(settings: NodeSettings) -> BackupSpec:
    return BackupSpec(
        service="node",
        migrations=MIGRATIONS,
        trees=(FileTree("model_store", settings.model_store_dir),),
    )
