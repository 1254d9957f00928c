"""The crowdworker pages through the Django test client: what a worker sees, what gets stored."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from annotation import selectors, tasks
from annotation.models import Assignment, Campaign, Item, Judgment, WorkerQuality
from annotation.questions import SSI
from annotation.services import assignments, campaigns, chats
from annotation.services.campaigns import DialogFilters
from groundwork.roles import Role
from tests.factories import UserFactory, dialog_with_turns

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def ssi_campaign(name: str = "SSI round 1", turns: list[str] | None = None) -> Campaign:
    """A campaign over one quality dialog: two model turns, so two items."""
    dialog_with_turns(turns or ["Hi", "Hello there", "How are you?", "Fine, and you?"], purpose="quality")
    return campaigns.campaign_create(name=name, kind="ssi", filters=DialogFilters(purpose="quality"))


def rate_url(campaign: Campaign) -> str:
    return f"/work/campaigns/{campaign.pk}/"


def lease_of(worker: Any) -> Assignment:
    return Assignment.objects.select_related("item").get(worker=worker, state=Assignment.State.LEASED)


def text(response: Any) -> str:
    return response.content.decode()


@pytest.fixture
def worker(client, users) -> Any:
    client.force_login(users[Role.CROWDWORKER])
    return users[Role.CROWDWORKER]


# --- /work/ ---------------------------------------------------------------------------------


def test_work_home_has_an_honest_empty_state(client, users) -> None:
    client.force_login(users[Role.CROWDWORKER])

    response = client.get("/work/")

    assert response.status_code == 200
    assert b"No campaigns are open to you yet" in response.content


def test_work_home_is_only_for_crowdworkers(client, users) -> None:
    client.force_login(users[Role.ADMIN])

    response = client.get("/work/")

    assert response.status_code == 403
    assert b"This page is for the crowdworker role." in response.content


def test_work_home_lists_open_campaigns_with_what_is_left(client, worker) -> None:
    campaign = ssi_campaign()
    campaigns.campaign_create(name="Paused one", kind="ssi", empty=True)
    Campaign.objects.filter(name="Paused one").update(status=Campaign.Status.PAUSED)

    page = text(client.get("/work/"))

    assert "No campaigns are open to you yet" not in page
    row = re.search(r"<tr>\s*<th scope=\"row\">SSI round 1</th>.*?</tr>", page, re.S)
    assert row is not None
    assert "Sensibleness, specificity, interestingness" in row.group()
    assert "<td>2</td>" in row.group()
    assert f'href="{rate_url(campaign)}"' in row.group()
    assert ">Start<" in row.group()
    assert "Paused one" not in page


def test_what_is_left_is_counted_up_to_a_limit_then_shown_with_a_plus(client, worker, monkeypatch) -> None:
    # The limit is 1,000 (a count past it read every open item of a large campaign on each page).
    monkeypatch.setattr(selectors, "LEFT_COUNTED_UP_TO", 3)
    ssi_campaign("Earlier")  # items of another campaign first, with lower ids
    campaign = ssi_campaign("Later")  # both quality dialogs: 4 items

    assert "<td>3+</td>" in text(client.get("/work/"))
    assert "Left: <strong>3+</strong>" in text(client.get(rate_url(campaign)))  # 3 unseen + the one shown

    answers = {"sensible": "yes", "specific": "yes", "interesting": "yes"}
    client.post(f"/work/assignments/{lease_of(worker).pk}/submit", answers, **HTMX)
    assert "Left: <strong>3</strong>" in text(client.get(rate_url(campaign)))  # 2 unseen + the one shown


def test_work_home_shows_why_a_worker_is_blocked_instead_of_a_start_link(client, worker) -> None:
    campaign = ssi_campaign()
    WorkerQuality.objects.create(
        campaign=campaign, worker=worker, blocked=True, blocked_reason="Your accuracy on check items is 40%."
    )

    page = text(client.get("/work/"))

    assert "Your accuracy on check items is 40%." in page
    assert rate_url(campaign) not in page


# --- the rating page ------------------------------------------------------------------------


def test_rating_page_shows_context_response_and_the_three_ssi_questions(client, worker) -> None:
    campaign = ssi_campaign()

    response = client.get(rate_url(campaign))

    assert response.status_code == 200
    page = text(response)
    lease = lease_of(worker)
    assert lease.item.response == "Hello there"
    transcript = re.search(r'<ol class="transcript" aria-label="Context">(.*?)</ol>', page, re.S).group(1)
    assert "Hi" in transcript
    assert "Hello there" not in transcript
    rated = re.search(r'<section class="rated".*?</section>', page, re.S).group()
    assert "Response to rate" in rated
    assert "Hello there" in rated
    assert re.findall(r"<legend>(.*?)</legend>", page) == ["Sensible", "Specific", "Interesting"]
    for question in SSI:
        assert question.prompt in page
        assert question.guidance.replace("'", "&#x27;") in page
        for value in ("yes", "no", "maybe"):
            assert f'name="{question.attribute}" value="{value}"' in page
    assert page.count("<summary>Guidance</summary>") == 3
    assert 'data-requires-yes="sensible"' in page
    assert 'data-requires-yes="specific"' in page
    assert f'action="/work/assignments/{lease.pk}/submit"' in page
    assert f'action="/work/assignments/{lease.pk}/skip"' in page
    assert "Done today: <strong>0</strong> · Left: <strong>2</strong>" in page
    assert "/static/annotation.js" in page


def test_a_reload_shows_the_same_item(client, worker) -> None:
    campaign = ssi_campaign()

    client.get(rate_url(campaign))
    client.get(rate_url(campaign))

    assert Assignment.objects.filter(worker=worker).count() == 1


def test_groundedness_questions_offer_not_sure_for_factual_correctness(client, worker) -> None:
    dialog_with_turns(["Who built it?", "Gustave Eiffel's company."], purpose="groundedness")
    campaign = campaigns.campaign_create(
        name="Grounded", kind="groundedness_eval", filters=DialogFilters(purpose="groundedness")
    )

    page = text(client.get(rate_url(campaign)))

    factual = re.search(r'<fieldset class="question" id="q-factually_correct".*?</fieldset>', page, re.S)
    assert "Not sure" in factual.group()
    assert "Maybe" not in factual.group()


def test_groundedness_asks_whether_claims_are_well_known_after_external_claims(client, worker) -> None:
    for n in range(2):
        dialog_with_turns(
            ["Where is Paris?", f"In France ({n})."], external_id=f"g{n}", purpose="groundedness"
        )
    campaign = campaigns.campaign_create(
        name="Grounded", kind="groundedness_eval", filters=DialogFilters(purpose="groundedness")
    )
    answers = {"understandable": "yes", "factually_correct": "yes", "cites_source": "no"}

    page = text(client.get(rate_url(campaign)))

    well_known = re.search(r'<fieldset class="question" id="q-well_known".*?</fieldset>', page, re.S).group()
    assert 'data-requires-yes="claims_external"' in well_known
    assert "Is every claim well known (common knowledge)?" in well_known
    assert "Well-known facts need no citation" in well_known
    # External claims: whether they are well known must be answered.
    first = lease_of(worker)
    refused = client.post(f"/work/assignments/{first.pk}/submit", {**answers, "claims_external": "yes"})
    assert "Well known: please answer yes, no or maybe." in text(refused)
    client.post(
        f"/work/assignments/{first.pk}/submit", {**answers, "claims_external": "yes", "well_known": "yes"}
    )
    # No external claims: not asked, and it counts "no" whatever the form sent.
    client.get(rate_url(campaign))
    second = lease_of(worker)
    client.post(
        f"/work/assignments/{second.pk}/submit", {**answers, "claims_external": "no", "well_known": "yes"}
    )
    stored = {
        (j.assignment_id, j.attribute): (j.value, j.raw_value)
        for j in Judgment.objects.filter(attribute="well_known")
    }
    assert stored == {(first.pk, "well_known"): ("yes", "yes"), (second.pk, "well_known"): ("no", "")}


def test_user_text_is_escaped(client, worker) -> None:
    campaign = ssi_campaign(turns=['<script>alert("x")</script>', "<img src=x onerror=alert(1)>"])

    page = text(client.get(rate_url(campaign)))

    assert "<script>alert" not in page
    assert "<img src=x" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_nothing_left_says_so_and_links_back(client, worker) -> None:
    campaign = ssi_campaign(turns=["Hi", "Hello there"])
    client.get(rate_url(campaign))
    client.post(f"/work/assignments/{lease_of(worker).pk}/submit", {"sensible": "no"})

    page = text(client.get(rate_url(campaign)))

    assert "Nothing left for you in this campaign" in page
    assert 'href="/work/"' in page
    assert "Done today: <strong>1</strong> · Left: <strong>0</strong>" in page


def test_a_blocked_worker_is_told_why_and_gets_no_item(client, worker) -> None:
    campaign = ssi_campaign()
    WorkerQuality.objects.create(
        campaign=campaign, worker=worker, blocked=True, blocked_reason="Blocked after check items."
    )

    response = client.get(rate_url(campaign))

    assert response.status_code == 200
    assert "Blocked after check items." in text(response)
    assert not Assignment.objects.filter(worker=worker).exists()


def test_a_rewrite_campaign_is_not_leased_on_the_rating_page(client, worker) -> None:
    dialog_with_turns(["Who built it?", "Eiffel."], purpose="groundedness")
    campaign = campaigns.campaign_create(
        name="Rewrite", kind="groundedness_rewrite", filters=DialogFilters(purpose="groundedness")
    )

    page = text(client.get(rate_url(campaign)))

    assert "not rated on this page" in page
    assert not Assignment.objects.filter(worker=worker).exists()


def test_an_unknown_campaign_is_404(client, worker) -> None:
    assert client.get("/work/campaigns/999999/").status_code == 404


# --- submitting -----------------------------------------------------------------------------


def test_a_form_post_stores_the_cascade_and_redirects_to_the_next_item(client, worker) -> None:
    campaign = ssi_campaign()
    client.get(rate_url(campaign))
    lease = lease_of(worker)

    # Without JavaScript every question shows; the cascade decides what counts.
    response = client.post(f"/work/assignments/{lease.pk}/submit", {"sensible": "no", "specific": "yes"})

    assert response.status_code == 303
    assert response["Location"] == rate_url(campaign)
    stored = {j.attribute: (j.value, j.raw_value) for j in Judgment.objects.filter(assignment=lease)}
    assert stored == {"sensible": ("no", "no"), "specific": ("no", ""), "interesting": ("no", "")}
    lease.refresh_from_db()
    assert lease.state == Assignment.State.SUBMITTED

    page = text(client.get(response["Location"]))

    assert "Fine, and you?" in page
    assert "Done today: <strong>1</strong> · Left: <strong>1</strong>" in page


def test_an_htmx_post_answers_with_the_next_item_only(client, worker, django_assert_max_num_queries) -> None:
    campaign = ssi_campaign()
    client.get(rate_url(campaign))
    lease = lease_of(worker)

    # The next-task round trip does not grow with the campaign.
    with django_assert_max_num_queries(25):
        response = client.post(
            f"/work/assignments/{lease.pk}/submit",
            {"sensible": "yes", "specific": "yes", "interesting": "maybe"},
            **HTMX,
        )

    assert response.status_code == 200
    page = text(response)
    assert page.lstrip().startswith('<section id="task"')
    assert "<html" not in page
    assert "Skip to content" not in page
    assert "Fine, and you?" in page
    assert "Saved." in page
    assert "Done today: <strong>1</strong> · Left: <strong>1</strong>" in page
    next_lease = lease_of(worker)
    assert next_lease.item.response == "Fine, and you?"
    assert f"/work/assignments/{next_lease.pk}/submit" in page
    stored = {j.attribute: j.value for j in Judgment.objects.filter(assignment=lease)}
    assert stored == {"sensible": "yes", "specific": "yes", "interesting": "maybe"}


def test_the_same_submission_twice_stores_it_once(client, worker) -> None:
    campaign = ssi_campaign()
    client.get(rate_url(campaign))
    lease = lease_of(worker)
    url = f"/work/assignments/{lease.pk}/submit"

    assert client.post(url, {"sensible": "no"}, **HTMX).status_code == 200
    response = client.post(url, {"sensible": "no"}, **HTMX)

    assert response.status_code == 200
    assert "Fine, and you?" in text(response)
    assert Judgment.objects.filter(assignment=lease).count() == 3


def test_a_missing_answer_is_shown_and_nothing_is_stored(client, worker) -> None:
    campaign = ssi_campaign()
    client.get(rate_url(campaign))
    lease = lease_of(worker)

    response = client.post(f"/work/assignments/{lease.pk}/submit", {"sensible": "yes"})

    assert response.status_code == 400
    page = text(response)
    alert = re.search(r'<div class="error" role="alert" data-task-error>(.*?)</div>', page, re.S).group(1)
    assert "Specific: please answer yes, no or maybe." in alert
    assert "Hello there" in page  # the same item, with the answer given kept
    assert re.search(r'name="sensible" value="yes"\s+checked', page)
    assert not Judgment.objects.exists()
    lease.refresh_from_db()
    assert lease.state == Assignment.State.LEASED


def test_a_missing_answer_over_htmx_is_swapped_in_with_the_message(client, worker) -> None:
    campaign = ssi_campaign()
    client.get(rate_url(campaign))
    lease = lease_of(worker)

    response = client.post(f"/work/assignments/{lease.pk}/submit", {}, **HTMX)

    assert response.status_code == 200  # htmx swaps only 2xx answers
    page = text(response)
    assert page.lstrip().startswith('<section id="task"')
    assert "Sensible: please answer yes, no or maybe." in page
    assert "Hello there" in page
    assert not Judgment.objects.exists()


def test_an_expired_lease_is_refused_and_the_next_item_offered(client, worker) -> None:
    campaign = ssi_campaign()
    client.get(rate_url(campaign))
    lease = lease_of(worker)
    Assignment.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = client.post(f"/work/assignments/{lease.pk}/submit", {"sensible": "yes", "specific": "no"})

    assert response.status_code == 409
    page = text(response)
    assert "The lease on this item ran out" in page
    assert "Here is your next item." in page
    assert "Fine, and you?" in page
    assert not Judgment.objects.exists()


def test_a_worker_cannot_submit_another_workers_assignment(client, worker) -> None:
    campaign = ssi_campaign()
    other = UserFactory(role=Role.CROWDWORKER)
    theirs = assignments.assignment_lease_next(worker=other, campaign=campaign)

    response = client.post(f"/work/assignments/{theirs.pk}/submit", {"sensible": "yes"})

    assert response.status_code == 403
    page = text(response)
    assert "This assignment belongs to another worker." in page
    assert "Hello there" not in page  # nothing of their item is shown
    assert not Judgment.objects.exists()
    htmx_response = client.post(f"/work/assignments/{theirs.pk}/submit", {"sensible": "yes"}, **HTMX)
    assert "This assignment belongs to another worker." in text(htmx_response)
    assert not Judgment.objects.exists()


def test_submit_and_skip_take_posts_only(client, worker) -> None:
    campaign = ssi_campaign()
    client.get(rate_url(campaign))
    lease = lease_of(worker)

    assert client.get(f"/work/assignments/{lease.pk}/submit").status_code == 405
    assert client.get(f"/work/assignments/{lease.pk}/skip").status_code == 405


# --- skipping -------------------------------------------------------------------------------


def test_skip_gives_the_item_back_and_shows_the_next(client, worker) -> None:
    campaign = ssi_campaign()
    client.get(rate_url(campaign))
    lease = lease_of(worker)
    slots = Item.objects.get(pk=lease.item_id).open_slots

    response = client.post(f"/work/assignments/{lease.pk}/skip")

    assert response.status_code == 303
    assert response["Location"] == rate_url(campaign)
    lease.refresh_from_db()
    assert lease.state == Assignment.State.SKIPPED
    assert Item.objects.get(pk=lease.item_id).open_slots == slots + 1
    page = text(client.get(rate_url(campaign)))
    assert "Fine, and you?" in page


def test_skip_over_htmx_answers_with_the_next_item(client, worker) -> None:
    campaign = ssi_campaign()
    client.get(rate_url(campaign))
    lease = lease_of(worker)

    response = client.post(f"/work/assignments/{lease.pk}/skip", **HTMX)

    assert response.status_code == 200
    page = text(response)
    assert page.lstrip().startswith('<section id="task"')
    assert "Skipped." in page
    assert "Fine, and you?" in page


def test_skipping_twice_is_refused_with_a_message(client, worker) -> None:
    campaign = ssi_campaign()
    client.get(rate_url(campaign))
    lease = lease_of(worker)
    client.post(f"/work/assignments/{lease.pk}/skip")

    response = client.post(f"/work/assignments/{lease.pk}/skip")

    assert response.status_code == 409
    assert "only a leased item can be skipped" in text(response)


# --- roles ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.ADMIN, Role.RESEARCHER])
def test_staff_roles_get_403_on_the_rating_pages(client, users, role) -> None:
    campaign = ssi_campaign()
    lease = assignments.assignment_lease_next(worker=users[Role.CROWDWORKER], campaign=campaign)
    client.force_login(users[role])

    assert client.get(rate_url(campaign)).status_code == 403
    assert client.post(f"/work/assignments/{lease.pk}/submit", {"sensible": "no"}).status_code == 403
    assert client.post(f"/work/assignments/{lease.pk}/skip").status_code == 403
    assert not Judgment.objects.exists()
    assert Assignment.objects.count() == 1


def test_anonymous_visitors_are_sent_to_log_in(client) -> None:
    campaign = ssi_campaign()

    response = client.get(rate_url(campaign))

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


# --- the chat page's query string -----------------------------------------------------------


@pytest.mark.parametrize("after", ["²", "x", "-1", "99999999999999999999"])
def test_a_chat_poll_after_no_turn_index_is_a_400_naming_it(client, worker, after: str) -> None:
    """``after`` is the last turn the page shows; "²" passed ``isdigit`` and broke ``int`` (500)."""
    started = chats.chat_start(worker=worker, purpose="quality")

    response = client.get(f"/work/chat/{started.pk}/", {"after": after}, **HTMX)

    assert response.status_code == 400
    assert response.json() == {
        "after": [f"expected a whole number from 0 to 9223372036854775807, got {after!r}"]
    }


def test_a_chat_poll_after_a_turn_shows_only_the_later_turns(client, worker, settings) -> None:
    settings.GROUNDWORK_RESPONDER = "tests.annotation.test_chat.fixed_responder"
    started = chats.chat_start(worker=worker, purpose="quality")
    chats.chat_say(chat=started, worker=worker, text="First message")
    tasks.chat_respond_task(started.dialog_id)

    response = client.get(f"/work/chat/{started.pk}/", {"after": "0"}, **HTMX)

    assert response.status_code == 200
    assert "First message" not in text(response)
    assert "That is a fine question" in text(response)
