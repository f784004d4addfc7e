"""``/api/v1/privacy``: the site's differential-privacy settings and what it has spent."""

from __future__ import annotations

from fastapi import APIRouter

from services.hospital_node import privacy
from services.hospital_node.api.deps import AdminOnly, ContextDep, SessionDep
from services.hospital_node.api.schemas import PrivacyOut

router = APIRouter(prefix="/api/v1/privacy", tags=["privacy"], dependencies=AdminOnly)


@router.get("", response_model=PrivacyOut)
def privacy_budget(ctx: ContextDep, session: SessionDep) -> PrivacyOut:
    """Spent epsilon, recomputed from the ledger of noised updates (also with DP now off)."""
    settings = ctx.settings
    config = settings.dp_config()
    status = privacy.status(session, config, settings.dp_delta)
    return PrivacyOut(
        enabled=config is not None,
        clip_norm=config.clip_norm if config else None,
        noise_multiplier=config.noise_multiplier if config else None,
        delta=settings.dp_delta,
        max_epsilon=settings.dp_max_epsilon or None,
        releases=status.releases,
        epsilon_spent=status.epsilon_spent,
        epsilon_per_update=status.epsilon_per_update,
        epsilon_after_next=status.epsilon_after_next,
    )
