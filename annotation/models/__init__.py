"""Crowd work: campaigns of items, assignments (leases) to workers, judgments, consensus
(``campaigns``); rater-aware labels (``raters``); chats with the model (``chats``). Everything is
imported from here: ``from annotation.models import Campaign``."""

from annotation.models.campaigns import (
    AggregationRun,
    Assignment,
    Campaign,
    ConsensusLabel,
    Item,
    Judgment,
    Rewrite,
    SafetyObjective,
    WorkerQuality,
    item_complete,
)
from annotation.models.chats import (
    EVALUATION_RATING_KIND,
    ROUTED_KIND,
    Chat,
    ChatPurpose,
    ChatRouting,
    FlagReason,
    TurnFlag,
)
from annotation.models.raters import (
    RaterAwareLabel,
    RaterEstimate,
    RaterModelRun,
)

__all__ = [
    "EVALUATION_RATING_KIND",
    "ROUTED_KIND",
    "AggregationRun",
    "Assignment",
    "Campaign",
    "Chat",
    "ChatPurpose",
    "ChatRouting",
    "ConsensusLabel",
    "FlagReason",
    "Item",
    "Judgment",
    "RaterAwareLabel",
    "RaterEstimate",
    "RaterModelRun",
    "Rewrite",
    "SafetyObjective",
    "TurnFlag",
    "WorkerQuality",
    "item_complete",
]
