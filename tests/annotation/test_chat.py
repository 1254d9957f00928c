"""Chatting with the model (METHOD.md §1): the services, the API and the pages.

The model's answers come from ``fixed_responder`` below, a fixed model behind the responder
interface (``settings.GROUNDWORK_RESPONDER``); one test uses the real one, on a tiny model. The
Celery task is called here in the foreground: no worker, no broker (``tests/e2e/test_chat.py``
runs the real worker).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core.cache import cache
from rest_framework.authtoken.models import Token

from annotation import selectors, tasks
from annotation.errors import ChatConflict, ChatError, ChatNotFound
from annotation.models import Campaign, Chat, ChatRouting, Item, TurnFlag
from annotation.services import campaigns, chats
from annotation.services.chats import TURN_LIMITS, TurnRange
from dialogs.models import Candidate, Dialog, Speaker, Turn
from dialogs.models import Role as DialogRole
from dialogs.services import CandidateRecord, TurnConflict, turn_add
from groundwork.roles import Role
from tests.factories import RoleFactory, UserFactory

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
FIXED_ANSWER = "That is a fine question; let me think about it."


def fixed_responder(*, dialog_id: int) -> Turn:
    """A fixed model behind the responder interface: always the same answer, with two candidates."""
    return turn_add(
        dialog=Dialog.objects.get(pk=dialog_id),
        speaker=Speaker.MODEL,
        text=FIXED_ANSWER,
        candidates=[
            CandidateRecord(text=FIXED_ANSWER, scores={"fixed": 1.0}, chosen=True),
            CandidateRecord(text="Another answer.", scores={"fixed": 0.0}),
        ],
        model_version="fixed",
    )


def newer_responder(*, dialog_id: int) -> Turn:
    """Another model version, serving after ``fixed``."""
    return turn_add(
        dialog=Dialog.objects.get(pk=dialog_id),
        speaker=Speaker.MODEL,
        text="A newer model's answer.",
        model_version="newer",
    )


def fallback_responder(*, dialog_id: int) -> Turn:
    """A model whose candidates were all predicted unsafe: the fallback reply, marked, is sent."""
    return turn_add(
        dialog=Dialog.objects.get(pk=dialog_id),
        speaker=Speaker.MODEL,
        text="I'd rather not answer that.",
        candidates=[CandidateRecord(text="Something unsafe.", scores={"P(UNSAFE)": 0.9})],
        model_version="fixed",
        fallback=Turn.Fallback.UNSAFE,
    )


def failing_responder(*, dialog_id: int) -> Turn:
    raise RuntimeError("no model serves in this test")


@pytest.fixture(autouse=True)
def _fixed_model(settings: Any) -> None:
    settings.GROUNDWORK_RESPONDER = "tests.annotation.test_chat.fixed_responder"


@pytest.fixture
def worker(users: dict[Role, Any]) -> Any:
    return users[Role.CROWDWORKER]


@pytest.fixture
def other() -> Any:
    return UserFactory(role=Role.CROWDWORKER)


def say(chat: Chat, worker: Any, text: str = "Hello there") -> Turn:
    """A message, and the model's answer: the task run here, as the worker would run it."""
    turn = chats.chat_say(chat=chat, worker=worker, text=text)
    tasks.chat_respond_task(chat.dialog_id)
    return turn


def chat_with(worker: Any, turns: int, purpose: str = "safety", **kwargs: Any) -> Chat:
    chat = chats.chat_start(worker=worker, purpose=purpose, **kwargs)
    for i in range(turns):
        say(chat, worker, f"Message {i + 1}")
    chat.refresh_from_db()
    return chat


def model_turns(chat: Chat) -> list[Turn]:
    return list(Turn.objects.filter(dialog_id=chat.dialog_id, speaker=Speaker.MODEL).order_by("index"))


def text(response: Any) -> str:
    return response.content.decode()


# --- the turn limits ------------------------------------------------------------------------


def test_turn_limits_are_the_papers_and_ours() -> None:
    assert {
        "quality": TurnRange(14, 30),
        "safety": TurnRange(5, 10),
        "groundedness": TurnRange(5, 20),
        "role": TurnRange(5, 20),
    } == TURN_LIMITS


def test_finishing_needs_the_minimum_and_counts_the_workers_messages(worker) -> None:
    chat = chat_with(worker, 4)

    with pytest.raises(ChatError) as refused:
        chats.chat_finish(chat=chat, worker=worker)
    assert (
        str(refused.value)
        == "You have 4 turns; a Safety chat needs at least 5 turns before you can finish it."
    )
    assert refused.value.status == 400
    chat.refresh_from_db()
    assert chat.status == Chat.Status.OPEN

    say(chat, worker)
    finished = chats.chat_finish(chat=chat, worker=worker)

    assert finished.chat.status == Chat.Status.FINISHED
    assert finished.chat.finished_at is not None
    assert Turn.objects.filter(dialog_id=chat.dialog_id).count() == 10  # 5 messages, 5 answers


def test_a_quality_chat_needs_fourteen_turns(worker) -> None:
    chat = chat_with(worker, 13, purpose="quality")
    with pytest.raises(ChatError, match="You have 13 turns; a Quality \\(SSI\\) chat needs at least 14"):
        chats.chat_finish(chat=chat, worker=worker)
    say(chat, worker)
    assert chats.chat_finish(chat=chat, worker=worker).chat.status == Chat.Status.FINISHED


def test_no_message_past_the_maximum(worker) -> None:
    chat = chat_with(worker, 10)

    with pytest.raises(ChatError, match="maximum of 10 turns") as refused:
        chats.chat_say(chat=chat, worker=worker, text="One more?")

    assert refused.value.status == 400
    assert Turn.objects.filter(dialog_id=chat.dialog_id, speaker=Speaker.USER).count() == 10
    assert chats.chat_finish(chat=chat, worker=worker).chat.status == Chat.Status.FINISHED


# --- starting, saying, answering ------------------------------------------------------------


def test_a_chat_starts_with_its_own_dialog(worker) -> None:
    chat = chats.chat_start(worker=worker, purpose="safety", mode="adversarial")

    dialog = chat.dialog
    assert re.fullmatch(r"chat-[0-9a-f-]{36}", dialog.external_id)
    assert (dialog.purpose, dialog.mode, dialog.created_by, dialog.source) == (
        "safety",
        "adversarial",
        worker,
        "chat",
    )
    assert (chat.status, chat.waiting, chat.error) == ("open", False, "")
    assert not dialog.turns.exists()
    assert chats.chat_start(worker=worker, purpose="safety").mode == "natural"


def test_a_role_chat_needs_an_active_role_and_keeps_its_preamble_out_of_the_turns(worker) -> None:
    everest = DialogRole.objects.get(slug="mount-everest")  # seeded by dialogs 0004_seed_roles
    assert everest.preamble == [
        {"speaker": "model", "text": "Hi, I'm Mount Everest. What would you like to know about me?"}
    ]

    chat = chats.chat_start(worker=worker, purpose="role", role=everest)

    assert chat.dialog.role == everest
    assert not chat.dialog.turns.exists()
    with pytest.raises(ChatError, match="Role: choose the role"):
        chats.chat_start(worker=worker, purpose="role")
    retired = RoleFactory(active=False)
    with pytest.raises(ChatError, match="not available any more"):
        chats.chat_start(worker=worker, purpose="role", role=retired)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"purpose": "pretrain"}, "Purpose: choose one of quality, safety, groundedness, role"),
        ({"purpose": "quality", "mode": "adversarial"}, "only safety chats have a mode"),
        ({"purpose": "safety", "mode": "loud"}, "Mode: choose one of"),
    ],
)
def test_a_chat_is_started_only_as_the_method_allows(worker, kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ChatError, match=message):
        chats.chat_start(worker=worker, **kwargs)
    assert not Chat.objects.exists()


def test_only_role_chats_have_a_role(worker) -> None:
    with pytest.raises(ChatError, match="only role chats talk to a role"):
        chats.chat_start(worker=worker, purpose="quality", role=RoleFactory())


def test_a_message_is_stored_and_the_answer_asked_of_the_inference_queue_after_commit(
    worker, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    sent: list[dict[str, Any]] = []
    # Queued by name: the signature calls the registered task's apply_async(args, kwargs, **options).
    monkeypatch.setattr(
        tasks.chat_respond_task,
        "apply_async",
        lambda args=(), kwargs=None, **options: sent.append({"args": tuple(args), **options}),
    )
    chat = chats.chat_start(worker=worker, purpose="quality")

    with django_capture_on_commit_callbacks() as callbacks:
        turn = chats.chat_say(chat=chat, worker=worker, text="  What do you think about owls?  ")
        assert not sent  # nothing before commit

    assert (turn.index, turn.speaker, turn.text) == (0, "user", "What do you think about owls?")
    chat.refresh_from_db()
    assert chat.waiting
    for callback in callbacks:
        callback()
    assert [(call["args"], call["queue"]) for call in sent] == [((chat.dialog_id,), "inference")]


def test_the_task_writes_the_models_answer_and_the_chat_stops_waiting(worker) -> None:
    chat = chats.chat_start(worker=worker, purpose="quality")
    chats.chat_say(chat=chat, worker=worker, text="Hi!")

    tasks.chat_respond_task(chat.dialog_id)

    chat.refresh_from_db()
    assert not chat.waiting
    (answer,) = model_turns(chat)
    assert (answer.index, answer.text) == (1, FIXED_ANSWER)
    assert Candidate.objects.filter(turn=answer).count() == 2


def test_the_task_run_twice_answers_once(worker) -> None:
    chat = chats.chat_start(worker=worker, purpose="quality")
    chats.chat_say(chat=chat, worker=worker, text="Hi!")
    tasks.chat_respond_task(chat.dialog_id)

    tasks.chat_respond_task(chat.dialog_id)
    # The answer written, but not recorded (the worker died in between): recorded, not asked again.
    Chat.objects.filter(pk=chat.pk).update(waiting=True)
    tasks.chat_respond_task(chat.dialog_id)

    assert len(model_turns(chat)) == 1
    chat.refresh_from_db()
    assert not chat.waiting


def test_nothing_can_be_sent_or_finished_while_the_model_answers(worker) -> None:
    chat = chat_with(worker, 4)
    chats.chat_say(chat=chat, worker=worker, text="The fifth.")

    with pytest.raises(ChatConflict, match="still answering") as refused:
        chats.chat_say(chat=chat, worker=worker, text="Hello?")
    assert refused.value.status == 409
    with pytest.raises(ChatConflict, match="still answering"):
        chats.chat_finish(chat=chat, worker=worker)


def test_an_empty_message_is_refused(worker) -> None:
    chat = chats.chat_start(worker=worker, purpose="quality")
    with pytest.raises(ChatError, match="Your message is empty"):
        chats.chat_say(chat=chat, worker=worker, text="   ")
    chat.refresh_from_db()
    assert not chat.waiting


def test_a_finished_chat_takes_no_more_messages_and_finishing_again_changes_nothing(worker) -> None:
    chat = chat_with(worker, 5)
    chats.chat_finish(chat=chat, worker=worker)

    with pytest.raises(ChatConflict, match="This chat is finished"):
        chats.chat_say(chat=chat, worker=worker, text="Still there?")
    again = chats.chat_finish(chat=chat, worker=worker)
    assert again.chat.status == Chat.Status.FINISHED
    assert again.items_added == 0


def test_only_the_chats_worker_can_talk_in_it(worker, other) -> None:
    chat = chat_with(worker, 5)

    for act in (
        lambda: chats.chat_say(chat=chat, worker=other, text="Hi"),
        lambda: chats.chat_finish(chat=chat, worker=other),
        lambda: chats.chat_retry(chat=chat, worker=other),
        lambda: selectors.chat_for_worker(worker=other, chat_id=chat.pk),
    ):
        with pytest.raises(ChatNotFound):
            act()
    assert Turn.objects.filter(dialog_id=chat.dialog_id).count() == 10
    assert Chat.objects.get(pk=chat.pk).status == Chat.Status.OPEN


# --- failures of the model ------------------------------------------------------------------


def test_a_failed_answer_is_recorded_so_the_page_stops_thinking(worker, settings, client) -> None:
    settings.GROUNDWORK_RESPONDER = "tests.annotation.test_chat.failing_responder"
    chat = chats.chat_start(worker=worker, purpose="quality")
    chats.chat_say(chat=chat, worker=worker, text="Hello?")

    result = tasks.chat_respond_task.apply(args=[chat.dialog_id])  # as a worker runs it
    assert result.failed()  # Celery sees the failure too
    assert isinstance(result.result, RuntimeError)

    chat.refresh_from_db()
    assert not chat.waiting
    assert chat.error == "RuntimeError: no model serves in this test"
    assert not model_turns(chat)
    client.force_login(worker)
    poll = client.get(f"/work/chat/{chat.pk}/?after=0", **HTMX)
    assert poll.status_code == 200
    assert "The model could not answer (RuntimeError: no model serves in this test)" in text(poll)
    assert "thinking" not in text(poll)
    page = text(client.get(f"/work/chat/{chat.pk}/"))
    assert "The model could not answer" in page
    assert 'http-equiv="refresh"' not in page

    # Asking again, with a model that answers this time.
    settings.GROUNDWORK_RESPONDER = "tests.annotation.test_chat.fixed_responder"
    response = client.post(f"/work/chat/{chat.pk}/retry")
    assert response.status_code == 303
    chat.refresh_from_db()
    assert chat.waiting
    assert chat.error == ""
    tasks.chat_respond_task(chat.dialog_id)
    assert [t.text for t in model_turns(chat)] == [FIXED_ANSWER]
    with pytest.raises(ChatConflict, match="nothing to ask again"):
        chats.chat_retry(chat=chat, worker=worker)


def test_without_a_serving_model_the_real_responder_failure_is_recorded(worker, settings, tmp_path) -> None:
    settings.ARTIFACTS_DIR = tmp_path
    settings.GROUNDWORK_RESPONDER = "trainer.inference.respond"
    chat = chats.chat_start(worker=worker, purpose="quality")
    chats.chat_say(chat=chat, worker=worker, text="Hello?")

    result = tasks.chat_respond_task.apply(args=[chat.dialog_id])  # as a worker runs it
    assert result.failed()
    assert "no model version serves yet" in str(result.result)

    chat.refresh_from_db()
    assert not chat.waiting
    assert chat.error.startswith("NoModel: no model version serves yet")


def test_the_real_model_answers_with_sixteen_candidates(worker, settings, tmp_path) -> None:
    from tests.trainer.helpers import tiny_model

    settings.ARTIFACTS_DIR = tmp_path
    settings.GROUNDWORK_RESPONDER = "trainer.inference.respond"
    version = tiny_model()
    chat = chats.chat_start(worker=worker, purpose="quality")

    say(chat, worker, "What do you think about tea?")

    chat.refresh_from_db()
    assert not chat.waiting
    assert chat.error == ""
    (answer,) = model_turns(chat)
    assert answer.index == 1
    assert answer.text
    assert Candidate.objects.filter(turn=answer).count() == 16
    assert Candidate.objects.filter(turn=answer, chosen=True).count() == 1
    assert answer.model_version == version.name


# --- flags ----------------------------------------------------------------------------------


def test_a_model_turn_of_an_adversarial_chat_is_flagged_once_per_worker(worker) -> None:
    chat = chat_with(worker, 1, mode="adversarial")
    (answer,) = model_turns(chat)

    flag = chats.chat_flag(turn=answer, worker=worker, reason="harmful", note="  It told me how.  ")
    assert (flag.reason, flag.note) == ("harmful", "It told me how.")
    chats.chat_flag(turn=answer, worker=worker, reason="misinformation")

    assert list(TurnFlag.objects.values_list("turn", "reason", "note")) == [(answer.pk, "misinformation", "")]


def test_flags_are_for_model_turns_of_adversarial_chats_only(worker, other) -> None:
    natural = chat_with(worker, 1)
    with pytest.raises(ChatError, match="Flags are for adversarial chats"):
        chats.chat_flag(turn=model_turns(natural)[0], worker=worker, reason="harmful")

    adversarial = chat_with(worker, 1, mode="adversarial")
    mine = Turn.objects.get(dialog_id=adversarial.dialog_id, speaker=Speaker.USER)
    with pytest.raises(ChatError, match="Only the model's turns can be flagged"):
        chats.chat_flag(turn=mine, worker=worker, reason="harmful")
    with pytest.raises(ChatError, match="Reason: choose one of Harmful content, Unfair bias"):
        chats.chat_flag(turn=model_turns(adversarial)[0], worker=worker, reason="rude")
    with pytest.raises(ChatNotFound):
        chats.chat_flag(turn=model_turns(adversarial)[0], worker=other, reason="harmful")
    assert not TurnFlag.objects.exists()


# --- routing finished chats to campaigns ----------------------------------------------------


def test_finishing_adds_the_model_turns_to_the_newest_open_campaign_of_the_kind(worker) -> None:
    older = campaigns.campaign_create(name="safety 1", kind="safety", empty=True)
    newest = campaigns.campaign_create(name="safety 2", kind="safety", empty=True)
    closed = campaigns.campaign_create(name="safety 3", kind="safety", empty=True)
    Campaign.objects.filter(pk=closed.pk).update(status=Campaign.Status.CLOSED)
    ssi = campaigns.campaign_create(name="ssi", kind="ssi", empty=True)
    chat = chat_with(worker, 5)

    finished = chats.chat_finish(chat=chat, worker=worker)

    assert finished.campaign == newest
    assert finished.items_added == 5
    items = list(Item.objects.filter(campaign=newest).order_by("id"))
    assert [item.turn for item in items] == model_turns(chat)
    assert all(item.author == worker for item in items)  # the worker never rates their own chat
    assert items[0].context == [{"speaker": "user", "text": "Message 1"}]
    assert items[-1].response == FIXED_ANSWER
    for campaign in (older, closed, ssi):
        assert not Item.objects.filter(campaign=campaign).exists()


def test_each_turn_of_a_chat_two_model_versions_answered_is_credited_to_its_own(worker, settings) -> None:
    chat = chat_with(worker, 2)
    settings.GROUNDWORK_RESPONDER = "tests.annotation.test_chat.newer_responder"  # a new version serves
    say(chat, worker, "Message 3")

    assert [(t.index, t.model_version) for t in model_turns(chat)] == [
        (1, "fixed"),
        (3, "fixed"),
        (5, "newer"),
    ]
    assert set(
        Turn.objects.filter(dialog_id=chat.dialog_id, speaker=Speaker.USER).values_list(
            "model_version", flat=True
        )
    ) == {""}


def test_a_campaign_of_one_model_version_takes_only_the_turns_that_version_wrote(worker, settings) -> None:
    chat = chat_with(worker, 3)
    settings.GROUNDWORK_RESPONDER = "tests.annotation.test_chat.newer_responder"
    say(chat, worker, "Message 4")
    say(chat, worker, "Message 5")

    fixed = campaigns.campaign_create(
        name="fixed only", kind="ssi", filters=campaigns.DialogFilters(model_version="fixed")
    )
    newer = campaigns.campaign_create(
        name="newer only", kind="ssi", filters=campaigns.DialogFilters(model_version="newer")
    )

    assert [item.turn.index for item in Item.objects.filter(campaign=fixed).order_by("turn__index")] == [
        1,
        3,
        5,
    ]
    newer_items = list(Item.objects.filter(campaign=newer).order_by("turn__index"))
    assert [item.turn.index for item in newer_items] == [7, 9]
    # The other version's turns are still the context of this one's.
    assert newer_items[0].context[-2:] == [
        {"speaker": "model", "text": FIXED_ANSWER},
        {"speaker": "user", "text": "Message 4"},
    ]


def test_a_finished_chat_routed_to_a_campaign_of_one_model_version_adds_only_its_turns(
    worker, settings
) -> None:
    routed = campaigns.campaign_create(
        name="newer", kind="safety", filters=campaigns.DialogFilters(model_version="newer"), empty=True
    )
    ChatRouting.objects.update_or_create(purpose="safety", defaults={"campaign": routed, "enabled": True})
    chat = chat_with(worker, 3)
    settings.GROUNDWORK_RESPONDER = "tests.annotation.test_chat.newer_responder"
    say(chat, worker, "Message 4")
    say(chat, worker, "Message 5")

    finished = chats.chat_finish(chat=chat, worker=worker)

    assert (finished.campaign, finished.items_added) == (routed, 2)
    assert [item.turn.model_version for item in Item.objects.filter(campaign=routed)] == ["newer", "newer"]


def test_a_fallback_reply_is_not_rated_unless_the_campaign_includes_fallbacks(worker, settings) -> None:
    chat = chat_with(worker, 4)
    settings.GROUNDWORK_RESPONDER = "tests.annotation.test_chat.fallback_responder"
    say(chat, worker, "Message 5")
    routed = campaigns.campaign_create(name="routed", kind="safety", empty=True)

    finished = chats.chat_finish(chat=chat, worker=worker)

    fallback = model_turns(chat)[-1]
    assert fallback.fallback == Turn.Fallback.UNSAFE
    assert (finished.campaign, finished.items_added) == (routed, 4)
    assert not Item.objects.filter(turn=fallback).exists()
    included = campaigns.campaign_create(
        name="with fallbacks", kind="safety", filters=campaigns.DialogFilters(include_fallback=True)
    )
    assert Item.objects.filter(campaign=included, turn=fallback).exists()
    assert included.filters["include_fallback"] is True


def test_an_admin_can_route_a_purpose_to_a_campaign_or_switch_routing_off(worker) -> None:
    chosen = campaigns.campaign_create(name="chosen", kind="safety", empty=True)
    campaigns.campaign_create(name="newer", kind="safety", empty=True)
    ChatRouting.objects.update_or_create(purpose="safety", defaults={"campaign": chosen, "enabled": True})

    assert chats.chat_finish(chat=chat_with(worker, 5), worker=worker).campaign == chosen
    assert Item.objects.filter(campaign=chosen).count() == 5

    ChatRouting.objects.filter(purpose="safety").update(enabled=False)
    finished = chats.chat_finish(chat=chat_with(worker, 5), worker=worker)

    assert finished.campaign is None
    assert finished.items_added == 0
    assert Item.objects.count() == 5


def test_routing_rows_are_seeded_one_per_purpose() -> None:
    assert dict(ChatRouting.objects.values_list("purpose", "enabled")) == {
        "quality": True,
        "safety": True,
        "groundedness": True,
        "role": True,
    }


def test_with_no_campaign_of_the_kind_the_chat_finishes_all_the_same(worker) -> None:
    campaigns.campaign_create(name="ssi", kind="ssi", empty=True)
    finished = chats.chat_finish(chat=chat_with(worker, 5, purpose="groundedness"), worker=worker)
    assert finished.chat.status == Chat.Status.FINISHED
    assert finished.campaign is None
    assert not Item.objects.exists()


# --- the API --------------------------------------------------------------------------------


@pytest.fixture
def api(api_client, worker) -> Any:
    token, _ = Token.objects.get_or_create(user=worker)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return api_client


def test_api_a_whole_chat(api, worker) -> None:
    campaign = campaigns.campaign_create(name="safety", kind="safety", empty=True)
    created = api.post("/api/v1/chats/", {"purpose": "safety", "mode": "natural"}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert {k: body[k] for k in ("purpose", "mode", "role", "status", "waiting", "turn_count")} == {
        "purpose": "safety",
        "mode": "natural",
        "role": None,
        "status": "open",
        "waiting": False,
        "turn_count": 0,
    }
    assert (body["min_turns"], body["max_turns"], body["turns"]) == (5, 10, [])
    url = f"/api/v1/chats/{body['id']}/"

    for i in range(5):
        sent = api.post(f"{url}messages", {"text": f"Question {i}?"}, format="json")
        assert sent.status_code == 202, sent.content
        assert {k: sent.json()[k] for k in ("index", "speaker", "text")} == {
            "index": 2 * i,
            "speaker": "user",
            "text": f"Question {i}?",
        }
        assert api.get(url).json()["waiting"] is True
        if i == 3:
            early = api.post(f"{url}finish")
            assert early.status_code == 409  # the model is still answering
        tasks.chat_respond_task(Chat.objects.get(pk=body["id"]).dialog_id)
        if i == 3:
            early = api.post(f"{url}finish")
            assert early.status_code == 400
            assert early.json() == {
                "detail": "You have 4 turns; a Safety chat needs at least 5 turns before you can finish it."
            }

    chat = api.get(url).json()
    assert chat["waiting"] is False
    assert chat["turn_count"] == 5
    assert [t["speaker"] for t in chat["turns"]] == ["user", "model"] * 5
    assert chat["turns"][1]["text"] == FIXED_ANSWER

    finished = api.post(f"{url}finish")
    assert finished.status_code == 200, finished.content
    assert (finished.json()["status"], finished.json()["campaign"], finished.json()["items_added"]) == (
        "finished",
        campaign.pk,
        5,
    )


def test_api_no_message_past_the_maximum(api, worker) -> None:
    chat = chat_with(worker, 10)

    response = api.post(f"/api/v1/chats/{chat.pk}/messages", {"text": "Eleven?"}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "detail": "This chat has reached its maximum of 10 turns: finish it, or start a new one."
    }


def test_api_a_role_chat_shows_the_preamble(api) -> None:
    response = api.post("/api/v1/chats/", {"purpose": "role", "role": "music-recommender"}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["role"] == "music-recommender"
    assert body["preamble"][0] == {
        "speaker": "model",
        "text": "Hi, I'm a music recommender. Tell me what you like and I'll suggest something to listen to.",
    }
    assert api.post("/api/v1/chats/", {"purpose": "role"}, format="json").json() == {
        "detail": "Role: choose the role the model plays."
    }
    assert api.post("/api/v1/chats/", {"purpose": "role", "role": "nobody"}, format="json").status_code == 400
    assert api.post("/api/v1/chats/", {"purpose": "pretrain"}, format="json").status_code == 400


def test_api_flags(api, worker) -> None:
    chat = chat_with(worker, 1, mode="adversarial")
    user_turn, model_turn = Turn.objects.filter(dialog_id=chat.dialog_id).order_by("index")
    url = f"/api/v1/chats/{chat.pk}/turns"

    response = api.post(
        f"{url}/{model_turn.pk}/flag", {"reason": "bias", "note": "A stereotype."}, format="json"
    )

    assert response.status_code == 201, response.content
    assert {k: response.json()[k] for k in ("turn", "reason", "note")} == {
        "turn": model_turn.pk,
        "reason": "bias",
        "note": "A stereotype.",
    }
    assert api.get(f"/api/v1/chats/{chat.pk}/").json()["turns"][1]["flag"]["reason"] == "bias"
    refused = api.post(f"{url}/{user_turn.pk}/flag", {"reason": "bias"}, format="json")
    assert refused.status_code == 400
    assert refused.json() == {"detail": "Only the model's turns can be flagged."}
    assert api.post(f"{url}/{model_turn.pk}/flag", {"reason": "rude"}, format="json").status_code == 400
    elsewhere = chat_with(worker, 1)  # natural mode
    other_turn = model_turns(elsewhere)[0]
    assert api.post(f"{url}/{other_turn.pk}/flag", {"reason": "bias"}, format="json").status_code == 404
    natural = api.post(
        f"/api/v1/chats/{elsewhere.pk}/turns/{other_turn.pk}/flag", {"reason": "bias"}, format="json"
    )
    assert natural.status_code == 400
    assert "adversarial" in natural.json()["detail"]


def test_api_another_workers_chat_is_not_found(api_client, worker, other) -> None:
    chat = chat_with(worker, 1, mode="adversarial")
    api_client.force_login(other)
    turn = model_turns(chat)[0]

    assert api_client.get(f"/api/v1/chats/{chat.pk}/").status_code == 404
    assert (
        api_client.post(f"/api/v1/chats/{chat.pk}/messages", {"text": "Hi"}, format="json").status_code == 404
    )
    assert api_client.post(f"/api/v1/chats/{chat.pk}/finish").status_code == 404
    flag = api_client.post(f"/api/v1/chats/{chat.pk}/turns/{turn.pk}/flag", {"reason": "bias"}, format="json")
    assert flag.status_code == 404
    assert Turn.objects.filter(dialog_id=chat.dialog_id).count() == 2
    assert not TurnFlag.objects.exists()


# --- the pages ------------------------------------------------------------------------------


@pytest.fixture
def page_worker(client, worker) -> Any:
    client.force_login(worker)
    return worker


def test_work_home_links_to_the_chat(client, page_worker) -> None:
    assert '<a class="button" href="/work/chat/">Chat with the model</a>' in text(client.get("/work/"))


def test_the_chat_page_offers_each_purpose_with_its_turns(client, page_worker) -> None:
    RoleFactory(name="Retired", active=False)

    page = text(client.get("/work/chat/"))

    for label, turns in (
        ("Quality (SSI)", "14–30 turns"),
        ("Safety", "5–10 turns"),
        ("Groundedness", "5–20 turns"),
        ("Role", "5–20 turns"),
    ):
        section = re.search(rf"<h2 id=\"purpose-\w+\">{re.escape(label)}</h2>.*?</section>", page, re.S)
        assert section is not None, label
        assert turns in section.group()
    assert 'name="mode" value="adversarial"' in page
    assert 'name="role" value="mount-everest"' in page
    assert 'name="role" value="music-recommender"' in page
    assert "Retired" not in page
    assert '<a href="/work/">Work</a>' in page  # the site's navigation still knows the worker's role


def test_starting_a_chat_goes_to_it(client, page_worker) -> None:
    response = client.post("/work/chat/start", {"purpose": "safety", "mode": "sensitive"})

    chat = Chat.objects.get()
    assert response.status_code == 303
    assert response["Location"] == f"/work/chat/{chat.pk}/"
    assert (chat.worker, chat.purpose, chat.mode) == (page_worker, "safety", "sensitive")
    page = text(client.get(response["Location"]))
    assert "Safety chat (sensitive topics)" in page
    assert "Turn <strong>0</strong> of 5–10" in page
    assert '<label for="message">Your message</label>' in page
    assert "Say hello to start the conversation." in page
    listed = text(client.get("/work/chat/"))
    assert f'href="/work/chat/{chat.pk}/"' in listed


def test_a_chat_that_cannot_start_says_why(client, page_worker) -> None:
    response = client.post("/work/chat/start", {"purpose": "role"})

    assert response.status_code == 400
    assert "Role: choose the role the model plays." in text(response)
    assert not Chat.objects.exists()


def test_sending_without_javascript_shows_the_turn_and_refreshes_until_the_answer(
    client, page_worker
) -> None:
    chat = chats.chat_start(worker=page_worker, purpose="safety")

    response = client.post(f"/work/chat/{chat.pk}/say", {"text": "Is the sea salty?"})

    assert response.status_code == 303
    page = text(client.get(response["Location"]))
    assert "Is the sea salty?" in page
    assert "The model is thinking…" in page
    assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in page
    assert "Turn <strong>1</strong> of 5–10" in page

    tasks.chat_respond_task(chat.dialog_id)

    page = text(client.get(f"/work/chat/{chat.pk}/"))
    assert FIXED_ANSWER in page
    assert "The model is thinking…" not in page
    assert 'http-equiv="refresh"' not in page


def test_sending_with_htmx_swaps_in_the_turn_and_the_placeholder_polls_for_the_answer(
    client, page_worker
) -> None:
    chat = chats.chat_start(worker=page_worker, purpose="safety")

    response = client.post(f"/work/chat/{chat.pk}/say", {"text": "Is the sea salty?"}, **HTMX)

    assert response.status_code == 200
    part = text(response)
    assert part.lstrip().startswith('<section id="chat"')
    assert "<html" not in part
    assert "Is the sea salty?" in part
    poll = f'hx-get="/work/chat/{chat.pk}/?after=0" hx-trigger="every 1s" hx-swap="outerHTML"'
    assert poll in part
    assert 'role="status"' in part
    assert "</textarea>" in part
    assert ">Is the sea salty?</textarea>" not in part

    waiting = client.get(f"/work/chat/{chat.pk}/?after=0", **HTMX)
    assert waiting.status_code == 204  # nothing to swap yet: the placeholder asks again

    tasks.chat_respond_task(chat.dialog_id)
    answered = client.get(f"/work/chat/{chat.pk}/?after=0", **HTMX)

    assert answered.status_code == 200
    assert FIXED_ANSWER in text(answered)
    assert "Is the sea salty?" not in text(answered)  # only what is new
    assert "thinking" not in text(answered)


def test_finish_is_explained_and_refused_before_the_minimum(client, page_worker) -> None:
    chat = chat_with(page_worker, 4)

    page = text(client.get(f"/work/chat/{chat.pk}/"))
    assert re.search(
        r'<button type="submit" class="secondary" aria-describedby="finish-hint" disabled>Finish', page
    )
    assert "You can finish after 5 turns; you have 4." in page

    response = client.post(f"/work/chat/{chat.pk}/finish")

    assert response.status_code == 400
    assert "You have 4 turns; a Safety chat needs at least 5 turns before you can finish it." in text(
        response
    )
    assert Chat.objects.get(pk=chat.pk).status == Chat.Status.OPEN


def test_finishing_at_the_minimum(client, page_worker) -> None:
    campaign = campaigns.campaign_create(name="safety", kind="safety", empty=True)
    chat = chat_with(page_worker, 5)
    assert "You can finish now" in text(client.get(f"/work/chat/{chat.pk}/"))

    response = client.post(f"/work/chat/{chat.pk}/finish")

    assert response.status_code == 303
    page = text(client.get(response["Location"]))
    assert "This chat is finished." in page
    assert "the model&#x27;s answers go to other workers to rate" in page
    assert 'id="message"' not in page
    assert Item.objects.filter(campaign=campaign).count() == 5


def test_the_page_refuses_a_message_past_the_maximum(client, page_worker) -> None:
    chat = chat_with(page_worker, 10)
    page = text(client.get(f"/work/chat/{chat.pk}/"))
    assert "This chat has its maximum of 10 turns: finish it." in page

    response = client.post(f"/work/chat/{chat.pk}/say", {"text": "Eleven?"})

    assert response.status_code == 400
    assert "This chat has reached its maximum of 10 turns: finish it, or start a new one." in text(response)
    htmx = client.post(f"/work/chat/{chat.pk}/say", {"text": "Eleven?"}, **HTMX)
    assert htmx.status_code == 200  # htmx swaps only 2xx answers
    assert "This chat has reached its maximum of 10 turns" in text(htmx)
    assert ">Eleven?</textarea>" in text(htmx)  # what the worker wrote is kept


def test_flagging_on_the_page(client, page_worker) -> None:
    chat = chat_with(page_worker, 1, mode="adversarial")
    answer = model_turns(chat)[0]
    page = text(client.get(f"/work/chat/{chat.pk}/"))
    assert "<summary>Flag</summary>" in page
    assert '<option value="incomprehensible">Incomprehensible</option>' in page

    url = f"/work/chat/{chat.pk}/turns/{answer.pk}/flag"
    response = client.post(url, {"reason": "harmful", "note": "Dangerous advice"})
    assert response.status_code == 303
    assert response["Location"] == f"/work/chat/{chat.pk}/#turn-1"

    part = text(client.post(url, {"reason": "other", "note": "Odd"}, **HTMX))
    assert part.lstrip().startswith('<li class="turn model" id="turn-1">')
    assert "Flagged: Other (Odd)" in part
    assert TurnFlag.objects.get().reason == "other"
    refused = text(client.post(url, {"reason": "nonsense"}, **HTMX))
    assert "Reason: choose one of" in refused
    natural = chat_with(page_worker, 1)
    assert "<summary>Flag</summary>" not in text(client.get(f"/work/chat/{natural.pk}/"))


def test_another_workers_chat_page_is_not_found(client, worker, other) -> None:
    chat = chat_with(worker, 1)
    client.force_login(other)

    assert client.get(f"/work/chat/{chat.pk}/").status_code == 404
    assert client.post(f"/work/chat/{chat.pk}/say", {"text": "Hi"}).status_code == 404
    assert client.post(f"/work/chat/{chat.pk}/finish").status_code == 404
    assert Turn.objects.filter(dialog_id=chat.dialog_id).count() == 2


def test_the_chat_page_reads_a_fixed_number_of_queries(
    client, page_worker, django_assert_max_num_queries
) -> None:
    chat = chat_with(page_worker, 8, mode="adversarial")
    for turn in model_turns(chat):
        chats.chat_flag(turn=turn, worker=page_worker, reason="other")

    with django_assert_max_num_queries(10):
        response = client.get(f"/work/chat/{chat.pk}/")

    assert response.status_code == 200
    assert text(response).count("Flagged: Other") == 8


# --- the admin ------------------------------------------------------------------------------


def test_the_admin_refuses_to_route_chats_to_a_campaign_of_another_kind(client, users, worker) -> None:
    ssi = campaigns.campaign_create(name="ssi only", kind="ssi", empty=True)
    routing = ChatRouting.objects.get(purpose="safety")
    client.force_login(users[Role.ADMIN])

    response = client.post(
        f"/admin/annotation/chatrouting/{routing.pk}/change/", {"enabled": "on", "campaign": ssi.pk}
    )

    assert response.status_code == 200  # the form again, with the error on the field
    assert "Safety chats are rated in a safety campaign; ssi only is a ssi campaign." in text(response)
    routing.refresh_from_db()
    assert routing.campaign is None
    # A row saved before the check (here by hand) sends the turns nowhere rather than to SSI raters.
    ChatRouting.objects.filter(pk=routing.pk).update(campaign=ssi)
    assert chats.routed_campaign(purpose="safety") is None
    assert chats.chat_finish(chat=chat_with(worker, 5), worker=worker).campaign is None
    assert not Item.objects.filter(campaign=ssi).exists()


def test_admins_switch_routing_off_per_purpose_and_read_chats_and_flags(client, users, worker) -> None:
    chat = chat_with(worker, 1, mode="adversarial")
    chats.chat_flag(turn=model_turns(chat)[0], worker=worker, reason="harmful")
    routing = ChatRouting.objects.get(purpose="safety")
    client.force_login(users[Role.ADMIN])

    listing = text(client.get("/admin/annotation/chatrouting/"))
    assert "Finished chats go to" in listing
    assert "nowhere (no open safety campaign)" in listing
    response = client.post(
        f"/admin/annotation/chatrouting/{routing.pk}/change/", {"enabled": "", "campaign": ""}
    )
    assert response.status_code == 302
    routing.refresh_from_db()
    assert not routing.enabled
    assert chats.routed_campaign(purpose="safety") is None

    assert chat.dialog.external_id in text(client.get("/admin/annotation/chat/"))
    assert "Harmful content" in text(client.get("/admin/annotation/turnflag/"))
    assert client.get("/admin/annotation/chat/add/").status_code == 403
    assert client.get("/admin/annotation/turnflag/add/").status_code == 403
    client.force_login(users[Role.RESEARCHER])
    assert client.get("/admin/annotation/chat/").status_code == 200
    assert client.get(f"/admin/annotation/chatrouting/{routing.pk}/change/").status_code == 200
    denied = client.post(
        f"/admin/annotation/chatrouting/{routing.pk}/change/", {"enabled": "on", "campaign": ""}
    )
    assert denied.status_code == 403


def test_an_overdue_answer_can_be_asked_again_and_only_one_answer_is_kept(worker, settings, client) -> None:
    chat = chats.chat_start(worker=worker, purpose="quality")
    chats.chat_say(chat=chat, worker=worker, text="Anyone there?")  # no worker runs the task yet
    with pytest.raises(ChatConflict, match="still answering"):
        chats.chat_retry(chat=chat, worker=worker)
    client.force_login(worker)
    assert "No answer yet" not in text(client.get(f"/work/chat/{chat.pk}/"))

    settings.CHAT_ANSWER_TIMEOUT_SECONDS = 0  # the answer is overdue
    page = text(client.get(f"/work/chat/{chat.pk}/"))
    assert "No answer yet: the model's worker may be busy or not running" in page
    assert client.post(f"/work/chat/{chat.pk}/retry").status_code == 303

    # Both requests reach a worker; the first answer is kept and the second refused.
    tasks.chat_respond_task(chat.dialog_id)
    answered = model_turns(chat)
    with pytest.raises(TurnConflict):
        turn_add(dialog=chat.dialog, speaker=Speaker.MODEL, text="A second answer.", index=answered[0].index)
    assert [t.text for t in model_turns(chat)] == [FIXED_ANSWER]
    chat.refresh_from_db()
    assert not chat.waiting


# --- limits: one worker cannot take the model's time from everyone else (issue 12) -------------


def set_rates(settings: Any, **rates: str) -> None:
    """Throttle rates for this test (read per request, so they apply at once)."""
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], **rates},
    }


def test_api_thirty_starts_open_as_many_chats_as_the_defaults_allow(api, worker) -> None:
    """Each chat's messages cost the model CPU: with the default limits, thirty starts open five
    chats (CHAT_MAX_OPEN) and the starts past ten an hour are refused with when to try again."""
    answers = [api.post("/api/v1/chats/", {"purpose": "quality"}, format="json") for _ in range(30)]

    assert [a.status_code for a in answers] == [201] * 5 + [429] * 25
    assert Chat.objects.filter(worker=worker).count() == 5
    assert answers[5].json() == {
        "detail": "You have 5 open chats, and 5 at once is the most: go on with one of them, "
        "and start a new one when you have finished it."
    }
    assert "Retry-After" not in answers[5]  # a finished chat frees a place, not the clock
    throttled = answers[10]
    assert throttled.json() == {
        "detail": "You have reached your limit of chat starts (10 an hour). "
        "You can start a chat again in 1 hour."
    }
    assert 3500 < int(throttled["Retry-After"]) <= 3600


def test_api_messages_are_rate_limited_per_worker_in_the_cache(api, worker, other, settings) -> None:
    set_rates(settings, chat_message="2/min")
    url = f"/api/v1/chats/{chats.chat_start(worker=worker, purpose='safety').pk}/messages"
    for i in range(2):
        assert api.post(url, {"text": f"Message {i}"}, format="json").status_code == 202
        tasks.chat_respond_task(Chat.objects.get(worker=worker).dialog_id)

    refused = api.post(url, {"text": "One more"}, format="json")

    assert refused.status_code == 429
    assert refused.json() == {
        "detail": "You have reached your limit of messages (2 a minute). "
        "You can send a message again in 1 minute."
    }
    assert 0 < int(refused["Retry-After"]) <= 60
    assert not Turn.objects.filter(text="One more").exists()
    theirs = chats.chat_start(worker=other, purpose="safety")
    api.force_authenticate(other)  # another worker has limits of their own
    assert api.post(f"/api/v1/chats/{theirs.pk}/messages", {"text": "Hi"}, format="json").status_code == 202
    api.force_authenticate(worker)
    cache.clear()  # the counts are kept in Django's cache, which every web process shares
    assert api.post(url, {"text": "One more"}, format="json").status_code == 202


def test_open_chats_are_capped_on_the_api_and_the_page(api, client, worker, settings) -> None:
    settings.CHAT_MAX_OPEN = 2
    first = chat_with(worker, 5)
    chats.chat_start(worker=worker, purpose="quality")
    client.force_login(worker)

    refused = api.post("/api/v1/chats/", {"purpose": "quality"}, format="json")
    page = client.post("/work/chat/start", {"purpose": "quality"})

    message = (
        "You have 2 open chats, and 2 at once is the most: go on with one of them, "
        "and start a new one when you have finished it."
    )
    assert (refused.status_code, refused.json()) == (429, {"detail": message})
    assert page.status_code == 429
    assert message in text(page).replace("&#x27;", "'")
    assert f'href="/work/chat/{first.pk}/"' in text(page)  # the open chats to go on with
    assert Chat.objects.filter(worker=worker).count() == 2

    chats.chat_finish(chat=first, worker=worker)
    assert api.post("/api/v1/chats/", {"purpose": "quality"}, format="json").status_code == 201


def test_the_pages_say_when_the_worker_may_go_on(client, page_worker, settings) -> None:
    set_rates(settings, chat_start="2/hour", chat_message="2/min", chat_retry="2/hour")
    for _ in range(2):
        assert client.post("/work/chat/start", {"purpose": "safety"}).status_code == 303
    started = client.post("/work/chat/start", {"purpose": "safety"})
    chat = Chat.objects.filter(worker=page_worker).first()
    for i in range(2):
        assert client.post(f"/work/chat/{chat.pk}/say", {"text": f"Message {i}"}, **HTMX).status_code == 200
        tasks.chat_respond_task(chat.dialog_id)
    said = client.post(f"/work/chat/{chat.pk}/say", {"text": "Still there?"}, **HTMX)
    said_plain = client.post(f"/work/chat/{chat.pk}/say", {"text": "Still there?"})

    assert started.status_code == 429
    assert (
        "You have reached your limit of chat starts (2 an hour). You can start a chat again in 1 hour."
        in text(started)
    )
    assert started["Retry-After"]
    assert said.status_code == 200  # htmx swaps only 2xx answers: the refusal shows in the chat
    assert (
        "You have reached your limit of messages (2 a minute). You can send a message again in 1 minute."
        in text(said)
    )
    assert ">Still there?</textarea>" in text(said)  # what the worker wrote is kept
    assert said_plain.status_code == 429
    assert "You can send a message again in 1 minute." in text(said_plain)
    assert chats.worker_turns(chat) == 2

    settings.CHAT_ANSWER_TIMEOUT_SECONDS = 0  # every answer is overdue: "Ask again" is offered
    chats.chat_say(chat=chat, worker=page_worker, text="Third")
    for _ in range(2):
        assert client.post(f"/work/chat/{chat.pk}/retry").status_code == 303
    retried = client.post(f"/work/chat/{chat.pk}/retry")
    assert retried.status_code == 429
    assert "You can ask the model again in 1 hour." in text(retried)
