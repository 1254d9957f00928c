"""The model, for the other apps (DESIGN.md): ``respond`` answers a dialog with the serving model.

Annotation's chat reaches it through ``settings.GROUNDWORK_RESPONDER`` (a dotted path to
``respond``), never by importing trainer. The work itself is ``trainer.sampling`` (sample-and-rank,
the research loop); here the serving model is loaded (once per process and version), the dialog
read, the toolset asked, and the turn written with every candidate through ``dialogs.services``.

Every model turn is credited to the version that wrote it (``Turn.model_version``). When a model
with discriminators predicts every candidate unsafe, none is sent: the turn is
``settings.SAFE_FALLBACK_REPLY``, marked ``Turn.Fallback.UNSAFE``, with every candidate kept so
researchers see what was refused. A turn whose chosen text is empty is ``FALLBACK``, marked
``Turn.Fallback.EMPTY``.

What a model version can do follows from its lineage (``trainer.selectors.lineage_kinds``):
discriminators once a ``finetune_quality_safety`` job is among its ancestors (else candidates are
ranked by likelihood), the research loop once a ``finetune_groundedness`` job is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from dialogs import services as dialogs_services
from dialogs.models import Dialog, Role, Turn
from toolset.services import toolset_query
from trainer import sampling, selectors
from trainer import tokenizer as tokenizers
from trainer.models import ModelVersion, TrainingJob

FALLBACK = "Sorry, I have nothing to say to that."

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_loaded: dict[str, sampling.Scorer] = {}


class NoModel(Exception):
    """No model version serves yet."""


def scorer_for(version: ModelVersion) -> sampling.Scorer:
    """The loaded model of ``version`` (kept for the next turn; one version at a time), ours or
    imported (``causal_lm.load``), on the device ``settings.INFERENCE_DEVICE`` chooses
    (``trainer.devices``)."""
    from trainer import causal_lm, devices

    with _lock:
        if version.name not in _loaded:
            model_files_check(version)
            device = devices.choose(settings.INFERENCE_DEVICE, name="INFERENCE_DEVICE")
            devices.prepare(device)
            tokenizer = tokenizers.load(version.path)
            model = causal_lm.load(version.path, tokenizer).to(device)
            discriminators = TrainingJob.Kind.FINETUNE_QUALITY_SAFETY in selectors.lineage_kinds(version)
            _loaded.clear()
            _loaded[version.name] = sampling.Scorer(model, tokenizer, discriminators=discriminators)
        return _loaded[version.name]


def model_files_check(version: ModelVersion) -> None:
    """Raise ``FileNotFoundError`` naming the folder and the setting when this host cannot see
    ``version``'s files: every inference worker reads them from the shared ``ARTIFACTS_DIR``
    (written whole by the job that made the version, then never changed), and takes the serving
    version from the database on every turn, so a newly served one is loaded on its next turn."""
    if not (version.path / "config.json").is_file():
        raise FileNotFoundError(
            f"model version {version.name}: no model files in {version.path} on this host. "
            "ARTIFACTS_DIR must be storage that the training workers write to and every inference "
            "worker reads (README: Scaling out)."
        )


def sampling_settings() -> sampling.Settings:
    return sampling.Settings(
        candidates=settings.INFERENCE_CANDIDATES,
        top_k=settings.INFERENCE_TOP_K,
        max_new_tokens=settings.INFERENCE_MAX_NEW_TOKENS,
        length_penalty=settings.INFERENCE_LENGTH_PENALTY,
        safety_threshold=settings.INFERENCE_SAFETY_THRESHOLD,
    )


def model_context(turns: Iterable[tuple[str, str]], role: Role | None) -> list[tuple[str, str]]:
    """What the model reads before answering: the role's preamble turns (when a role is played),
    then ``turns``."""
    preamble = role.preamble if role is not None else []
    return [(str(t.get("speaker", "model")), str(t.get("text", ""))) for t in preamble] + list(turns)


def _context(dialog: Dialog) -> list[tuple[str, str]]:
    turns = [(t.speaker, t.text) for t in dialog.turns.order_by("index")]
    return model_context(turns, dialog.role if dialog.role_id else None)


@dataclass
class Reply:
    """A model turn as it is stored (``turn_add``, ``evaluation_response_add``): what is sent,
    the base response and research trace of a grounded model, why it is a canned reply, and every
    candidate with its scores."""

    text: str
    base_text: str
    research: list[dict[str, str]]
    fallback: str
    candidates: list[dialogs_services.CandidateRecord]


def reply_of(
    answer: sampling.Answer,
    *,
    scorer: sampling.Scorer,
    context: Sequence[tuple[str, str]],
    version: ModelVersion,
    grounded: bool,
    session: str,
) -> Reply:
    """The turn sample-and-rank's ``answer`` gives, as every answer of a model is made: the safe
    fallback reply (marked ``UNSAFE``) when no candidate was chosen; else the chosen text, which a
    grounded model then researches (``session`` names the toolset session); ``FALLBACK`` (marked
    ``EMPTY``) when that is empty. Every candidate is kept with its scores."""
    text, base, research, fallback = answer.text, "", [], ""
    if answer.chosen is None:
        text, fallback = settings.SAFE_FALLBACK_REPLY, Turn.Fallback.UNSAFE
        logger.warning(
            "%s: every candidate for %s was predicted unsafe; the fallback reply was sent (%s)",
            version.name,
            session,
            answer.note,
        )
    elif grounded and text:
        trace = scorer.research(
            context,
            text,
            lambda query: _ask(session, query, version.name),
            max_queries=settings.RESEARCH_MAX_QUERIES,
            settings=sampling_settings(),
        )
        text, base, research = trace.response, trace.base, trace.steps
    candidates = [
        dialogs_services.CandidateRecord(
            text=c.text, scores={**c.as_scores(), "ranking": answer.ranking}, chosen=c.index == answer.chosen
        )
        for c in answer.candidates
    ]
    if not text.strip():
        text, fallback = FALLBACK, Turn.Fallback.EMPTY
    return Reply(text=text, base_text=base, research=research, fallback=fallback, candidates=candidates)


def respond(*, dialog_id: int) -> Turn:
    """The serving model's next turn in the dialog, chosen by sample-and-rank (and grounded by the
    research loop when the model was trained for it), stored with all its candidates and credited
    to the serving version; the safe fallback reply (marked) when every candidate is unsafe."""
    version = ModelVersion.objects.filter(serving=True).select_related("job", "parent").first()
    if version is None:
        raise NoModel("no model version serves yet: train one (make run does) and serve it")
    dialog = Dialog.objects.select_related("role").get(pk=dialog_id)
    scorer = scorer_for(version)
    context = _context(dialog)
    index = dialog.turns.count()  # the answer's place: a second answer to the same turns is refused
    answer = scorer.respond(context, sampling_settings())
    reply = reply_of(
        answer,
        scorer=scorer,
        context=context,
        version=version,
        grounded=TrainingJob.Kind.FINETUNE_GROUNDEDNESS in selectors.lineage_kinds(version),
        session=f"dialog-{dialog.pk}-turn-{len(context)}",
    )
    return dialogs_services.turn_add(
        dialog=dialog,
        speaker="model",
        text=reply.text,
        base_text=reply.base_text,
        research=reply.research,
        candidates=reply.candidates,
        model_version=version.name,
        fallback=reply.fallback,
        index=index,
    )


def _ask(session: str, query: str, model_name: str) -> dict[str, str]:
    """The toolset's first answer with text, as the research loop shows it to the model:
    ``{"title", "url", "snippet"}`` (all empty when no tool answered)."""
    results: list[Any] = toolset_query(session=session, query=query[:500], actor_model=model_name)
    for result in results:
        if result.snippet:
            return {"title": result.title, "url": result.url, "snippet": result.snippet}
    return {"title": "", "url": "", "snippet": ""}
