"""The rewrite task (METHOD.md §4): services and the worker's page."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from hypothesis import example, given
from hypothesis import strategies as st

from annotation.errors import AssignmentConflict, AssignmentForbidden, InvalidAnswers
from annotation.models import Assignment, ConsensusLabel, Judgment, Rewrite
from annotation.services import assignments, consensus, rewrites
from annotation.services.rewrites import cited_urls
from dialogs.models import Candidate
from groundwork.roles import Role
from tests.annotation.helpers import BASE_RESPONSE, JAGUAR_URL, rewrite_campaign, rewrite_corpus
from tests.factories import UserFactory, dialog_with_turns
from toolset.models import ToolCall

pytestmark = pytest.mark.django_db

LION_URL = "https://en.wikipedia.org/wiki/Lion"
REWRITTEN = f"The jaguar is the largest cat in the Americas [Jaguar]({JAGUAR_URL})."


@pytest.fixture
def corpus(settings: Any, tmp_path: Any) -> None:
    settings.ARTIFACTS_DIR = tmp_path
    rewrite_corpus()


@pytest.fixture
def worker() -> Any:
    return UserFactory(role=Role.CROWDWORKER)


@pytest.fixture
def lease(worker: Any) -> Assignment:
    assignment = assignments.assignment_lease_next(worker=worker, campaign=rewrite_campaign())
    assert assignment is not None
    return assignment


def judgments(assignment: Assignment) -> dict[str, tuple[str, str]]:
    return {j.attribute: (j.value, j.raw_value) for j in Judgment.objects.filter(assignment=assignment)}


def test_no_external_claims_is_submitted_without_a_rewrite(lease: Assignment, worker: Any) -> None:
    result = rewrites.rewrite_submit(
        assignment_id=lease.pk, worker=worker, claims_external=False, common_knowledge=None, rewrite="ignored"
    )

    assert result.created
    stored = Rewrite.objects.get(assignment=lease)
    assert (stored.claims_external, stored.common_knowledge, stored.text, stored.cited_urls) == (
        False,
        False,
        "",
        [],
    )
    assert judgments(lease) == {"claims_external": ("no", "no"), "common_knowledge": ("no", "")}
    assert Assignment.objects.get(pk=lease.pk).state == Assignment.State.SUBMITTED


def test_common_knowledge_is_submitted_without_research(lease: Assignment, worker: Any) -> None:
    rewrites.rewrite_submit(
        assignment_id=lease.pk, worker=worker, claims_external=True, common_knowledge=True
    )

    stored = Rewrite.objects.get(assignment=lease)
    assert (stored.claims_external, stored.common_knowledge, stored.text) == (True, True, "")
    assert judgments(lease) == {"claims_external": ("yes", "yes"), "common_knowledge": ("yes", "yes")}


def test_a_cited_url_that_was_shown_is_accepted_with_the_research_kept(
    corpus: None, lease: Assignment, worker: Any
) -> None:
    results = rewrites.rewrite_research(assignment_id=lease.pk, worker=worker, query="largest cat Americas")
    assert [r.url for r in results] == [JAGUAR_URL]

    result = rewrites.rewrite_submit(
        assignment_id=lease.pk, worker=worker, claims_external=True, common_knowledge=False, rewrite=REWRITTEN
    )

    stored = result.rewrite
    assert stored.text == REWRITTEN
    assert stored.cited_urls == [JAGUAR_URL]
    call = ToolCall.objects.get(session=f"assignment-{lease.pk}")
    assert stored.tool_call_ids == [call.pk]
    assert (call.query, call.actor_user_id, call.results[0]["url"]) == (
        "largest cat Americas",
        worker.pk,
        JAGUAR_URL,
    )
    assert judgments(lease)["common_knowledge"] == ("no", "no")


def test_a_cited_url_that_was_not_shown_is_refused_by_name_and_nothing_is_stored(
    corpus: None, lease: Assignment, worker: Any
) -> None:
    rewrites.rewrite_research(assignment_id=lease.pk, worker=worker, query="largest cat Americas")

    with pytest.raises(InvalidAnswers, match=LION_URL):
        rewrites.rewrite_submit(
            assignment_id=lease.pk,
            worker=worker,
            claims_external=True,
            common_knowledge=False,
            rewrite=f"{REWRITTEN} Lions live in Africa, see {LION_URL}.",
        )

    assert not Rewrite.objects.exists()
    assert not Judgment.objects.exists()
    assert Assignment.objects.get(pk=lease.pk).state == Assignment.State.LEASED


def test_a_url_shown_to_another_assignment_cannot_be_cited(
    corpus: None, lease: Assignment, worker: Any
) -> None:
    other = UserFactory(role=Role.CROWDWORKER)
    theirs = assignments.assignment_lease_next(worker=other, campaign=lease.item.campaign)
    assert theirs is not None
    rewrites.rewrite_research(assignment_id=theirs.pk, worker=other, query="largest cat Americas")

    with pytest.raises(InvalidAnswers, match=JAGUAR_URL):
        rewrites.rewrite_submit(
            assignment_id=lease.pk,
            worker=worker,
            claims_external=True,
            common_knowledge=False,
            rewrite=REWRITTEN,
        )


def test_citations_in_markdown_and_bare_are_found() -> None:
    text = "See [Mercury](https://en.wikipedia.org/wiki/Mercury_(planet)) and (https://example.org/a). Also https://example.org/a."
    assert rewrites.cited_urls(text) == [
        "https://en.wikipedia.org/wiki/Mercury_(planet)",
        "https://example.org/a",
    ]


@pytest.mark.parametrize(
    ("rewrite", "message"), [("", "rewrite is required"), (f"  {BASE_RESPONSE}\n", "same as the response")]
)
def test_research_needs_a_rewrite_that_differs(
    lease: Assignment, worker: Any, rewrite: str, message: str
) -> None:
    with pytest.raises(InvalidAnswers, match=message):
        rewrites.rewrite_submit(
            assignment_id=lease.pk,
            worker=worker,
            claims_external=True,
            common_knowledge=False,
            rewrite=rewrite,
        )
    assert not Rewrite.objects.exists()


def test_the_same_submission_twice_is_stored_once_and_other_answers_conflict(
    corpus: None, lease: Assignment, worker: Any
) -> None:
    rewrites.rewrite_research(assignment_id=lease.pk, worker=worker, query="largest cat Americas")
    answer = {"claims_external": True, "common_knowledge": False, "rewrite": REWRITTEN}

    first = rewrites.rewrite_submit(assignment_id=lease.pk, worker=worker, **answer)
    again = rewrites.rewrite_submit(assignment_id=lease.pk, worker=worker, **answer)

    assert (first.created, again.created) == (True, False)
    assert again.rewrite.pk == first.rewrite.pk
    assert Rewrite.objects.count() == 1
    assert Judgment.objects.count() == 2
    with pytest.raises(AssignmentConflict):
        rewrites.rewrite_submit(
            assignment_id=lease.pk, worker=worker, claims_external=False, common_knowledge=None
        )


def test_an_expired_lease_is_refused(lease: Assignment, worker: Any) -> None:
    Assignment.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    with pytest.raises(AssignmentConflict):
        rewrites.rewrite_submit(
            assignment_id=lease.pk, worker=worker, claims_external=False, common_knowledge=None
        )
    assert not Rewrite.objects.exists()


def test_another_workers_assignment_is_forbidden(lease: Assignment) -> None:
    other = UserFactory(role=Role.CROWDWORKER)
    with pytest.raises(AssignmentForbidden):
        rewrites.rewrite_submit(
            assignment_id=lease.pk, worker=other, claims_external=False, common_knowledge=None
        )
    with pytest.raises(AssignmentForbidden):
        rewrites.rewrite_research(assignment_id=lease.pk, worker=other, query="jaguar")


def test_common_knowledge_holds_only_when_all_three_raters_say_so(settings: Any) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = True
    campaign = rewrite_campaign()
    for common in (True, True, False):
        worker = UserFactory(role=Role.CROWDWORKER)
        lease = assignments.assignment_lease_next(worker=worker, campaign=campaign)
        assert lease is not None
        rewrites.rewrite_submit(
            assignment_id=lease.pk,
            worker=worker,
            claims_external=True,
            common_knowledge=common,
            rewrite="The jaguar lives in the Americas." if not common else "",
        )
    consensus.campaign_aggregate(campaign=campaign)

    labels = {label.attribute: (label.label, label.yes) for label in ConsensusLabel.objects.all()}
    assert labels == {"claims_external": (1, 3), "common_knowledge": (0, 2)}


# --- the page -----------------------------------------------------------------------------------


@pytest.fixture
def client_for(worker: Any) -> Client:
    client = Client()
    client.force_login(worker)
    return client


def test_the_work_page_links_to_the_rewrite_page(client_for: Client, lease: Assignment) -> None:
    page = client_for.get(reverse("work")).content.decode()
    assert reverse("work-rewrite", args=[lease.item.campaign_id]) in page
    assert "Rewriting is not done on this page" not in page


def test_research_then_submit_through_the_page_without_javascript(
    corpus: None, client_for: Client, lease: Assignment
) -> None:
    page = client_for.get(reverse("work-rewrite", args=[lease.item.campaign_id]))
    assert page.status_code == 200
    html = page.content.decode()
    assert BASE_RESPONSE in html
    for name in ('for="rewrite-text"', 'for="research-query"', "<legend>External claims</legend>"):
        assert name in html

    searched = client_for.post(
        reverse("work-rewrite-research", args=[lease.pk]), {"query": "largest cat Americas"}
    )
    assert searched.status_code == 303
    html = client_for.get(searched["Location"]).content.decode()
    assert JAGUAR_URL in html
    assert "Cite<span" in html

    done = client_for.post(
        reverse("work-rewrite-submit", args=[lease.pk]),
        {"claims_external": "yes", "common_knowledge": "no", "rewrite": REWRITTEN},
    )
    assert done.status_code == 303
    assert Rewrite.objects.get(assignment=lease).cited_urls == [JAGUAR_URL]


def test_research_with_htmx_answers_the_results_fragment(
    corpus: None, client_for: Client, lease: Assignment
) -> None:
    answer = client_for.post(
        reverse("work-rewrite-research", args=[lease.pk]),
        {"query": "lion savanna"},
        headers={"HX-Request": "true"},
    )
    html = answer.content.decode()
    assert answer.status_code == 200
    assert 'id="research-results"' in html
    assert LION_URL in html
    assert "<h1>" not in html


def test_a_refused_citation_keeps_the_text_and_names_the_url(
    corpus: None, client_for: Client, lease: Assignment
) -> None:
    text = f"Lions live in Africa [Lion]({LION_URL})."
    answer = client_for.post(
        reverse("work-rewrite-submit", args=[lease.pk]),
        {"claims_external": "yes", "common_knowledge": "no", "rewrite": text},
    )
    assert answer.status_code == 400
    html = answer.content.decode()
    assert f"{LION_URL} was not among the search results" in html
    assert "Lions live in Africa" in html
    assert not Rewrite.objects.exists()


def test_another_workers_assignment_is_403_on_the_page(lease: Assignment) -> None:
    client = Client()
    client.force_login(UserFactory(role=Role.CROWDWORKER))
    for name, data in (
        ("work-rewrite-submit", {"claims_external": "no"}),
        ("work-rewrite-research", {"query": "jaguar"}),
    ):
        answer = client.post(reverse(name, args=[lease.pk]), data)
        assert answer.status_code == 403
        assert BASE_RESPONSE not in answer.content.decode()
    assert not Rewrite.objects.exists()
    assert not ToolCall.objects.exists()


def test_the_json_api_runs_the_same_rewrite_task(corpus: None, worker: Any, api_client: Any) -> None:
    """Next task → search with the toolset API in the task's session → submit a cited rewrite."""
    rewrite_campaign(name="api")
    api_client.force_authenticate(worker)
    task = api_client.get("/api/v1/tasks/next", {"kind": "groundedness_rewrite"}).json()
    assert task["questions"] == []
    session = task["research_session"]

    found = api_client.post(
        "/api/v1/toolset/query",
        {"query": "largest cat Americas", "session": session, "tool": "search"},
        format="json",
    ).json()["results"]
    assert found[0]["url"] == JAGUAR_URL
    rewrite = f"The jaguar is the largest cat in the Americas ([Jaguar]({JAGUAR_URL}))."
    body = {"claims_external": True, "common_knowledge": False, "rewrite": rewrite, "citations": [JAGUAR_URL]}

    response = api_client.post(f"/api/v1/assignments/{task['assignment_id']}/submit", body, format="json")
    again = api_client.post(f"/api/v1/assignments/{task['assignment_id']}/submit", body, format="json")

    assert (response.status_code, again.status_code) == (201, 200)
    assert response.json()["rewrite"] == {"text": rewrite, "cited_urls": [JAGUAR_URL], "candidate_labels": {}}
    assert response.json()["judgments"] == {"claims_external": "yes", "common_knowledge": "no"}
    stored = Rewrite.objects.get(assignment_id=task["assignment_id"])
    assert stored.cited_urls == [JAGUAR_URL]


def test_the_json_api_refuses_an_uncited_source_and_a_mixed_body(
    corpus: None, lease: Assignment, worker: Any, api_client: Any
) -> None:
    api_client.force_authenticate(worker)
    url = f"/api/v1/assignments/{lease.pk}/submit"
    body = {"claims_external": True, "common_knowledge": False, "rewrite": "See https://example.org/x"}

    refused = api_client.post(url, body, format="json")
    mixed = api_client.post(url, {**body, "answers": {"sensible": "yes"}}, format="json")

    assert refused.status_code == 400
    assert "https://example.org/x was not among the search results" in refused.json()["detail"]
    assert mixed.status_code == 400
    assert not Rewrite.objects.exists()


def test_sampled_candidates_are_labelled_correct_or_incorrect(lease: Assignment, worker: Any) -> None:
    right = Candidate.objects.create(turn=lease.item.turn, index=0, text="Jaguars live in the Americas.")
    wrong = Candidate.objects.create(turn=lease.item.turn, index=1, text="Jaguars live in Africa.")

    result = rewrites.rewrite_submit(
        assignment_id=lease.pk,
        worker=worker,
        claims_external=True,
        common_knowledge=True,
        candidate_labels={right.pk: "correct", wrong.pk: "incorrect"},
    )

    assert result.rewrite.candidate_labels == {str(right.pk): "correct", str(wrong.pk): "incorrect"}


def test_a_candidate_of_another_turn_or_a_bad_label_is_refused(lease: Assignment, worker: Any) -> None:
    mine = Candidate.objects.create(turn=lease.item.turn, index=0, text="Jaguars live in the Americas.")
    elsewhere = dialog_with_turns(["Hi", "Hello"], external_id="other", purpose="safety").turns.get(index=1)
    foreign = Candidate.objects.create(turn=elsewhere, index=0, text="Hello there")
    submit = partial(
        rewrites.rewrite_submit,
        assignment_id=lease.pk,
        worker=worker,
        claims_external=False,
        common_knowledge=None,
    )

    with pytest.raises(InvalidAnswers, match=f"{foreign.pk} is not a sampled candidate of this turn"):
        submit(candidate_labels={foreign.pk: "correct"})
    with pytest.raises(InvalidAnswers, match="'maybe' is not a label"):
        submit(candidate_labels={mine.pk: "maybe"})
    assert not Rewrite.objects.exists()


def test_the_page_shows_the_candidates_and_posts_their_labels(client: Client, worker: Any) -> None:
    campaign = rewrite_campaign(name="page")
    turn = campaign.items.get().turn
    candidate = Candidate.objects.create(turn=turn, index=0, text="Jaguars <b>roar</b>.")
    client.force_login(worker)

    page = client.get(reverse("work-rewrite", args=[campaign.pk])).content.decode()
    assignment = Assignment.objects.get(worker=worker)
    response = client.post(
        reverse("work-rewrite-submit", args=[assignment.pk]),
        {"claims_external": "no", f"candidate-{candidate.pk}": "incorrect"},
    )

    assert "Sampled candidates" in page
    assert "Jaguars &lt;b&gt;roar&lt;/b&gt;." in page
    assert response.status_code == 303
    assert Rewrite.objects.get().candidate_labels == {str(candidate.pk): "incorrect"}


# --- a rewrite costs the same whatever its text (issue 12) ---------------------------------------

# cited_urls's Markdown links as a single regex found them before: the reference its scan must
# agree with, link for link (it was quadratic in a text full of "[").
_QUADRATIC_LINK = re.compile(r"\[[^\]]*\]\((https?://(?:[^\s()]|\([^\s()]*\))+)\)")
_BARE_URL = re.compile(r"https?://[^\s<>\[\]\"']+")


def reference_cited_urls(text: str) -> list[str]:
    urls = [m.group(1) for m in _QUADRATIC_LINK.finditer(text)]
    for match in _BARE_URL.finditer(_QUADRATIC_LINK.sub(" ", text)):
        url = match.group(0).rstrip(".,;:!?")
        if url.endswith(")") and url.count("(") < url.count(")"):
            url = url[:-1]
        urls.append(url)
    return list(dict.fromkeys(urls))


PIECES = ["[", "]", "(", ")", "](", "https://", "http://", "a", "b.org", " ", "\n", ".", ")."]


@given(st.lists(st.sampled_from(PIECES), max_size=40).map("".join))
@example("[see https://a.org [b](https://b.org) and [c](https://c.org/x_(y)).")
def test_the_cited_urls_are_those_the_single_regex_found(text: str) -> None:
    assert rewrites.cited_urls(text) == reference_cited_urls(text)


ADVERSARIAL = {
    "brackets": "[" * 200_000,
    "unclosed links": "[a](" * 50_000,
    "links without their parenthesis": "[a](http://" * 20_000,
    "targets without text": "](http://x" * 20_000,
    "nested parentheses": "[a](http://" + "(x" * 100_000,
    "one long target": "[a](http://" + "x]" * 100_000,
}


@pytest.mark.parametrize("text", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_scanning_a_text_for_citations_takes_linear_time(text: str) -> None:
    """200,000 "[" took about a minute with the single regex (80,000 took 9.4 s); linear, they
    take milliseconds. CPU time of this process, so a busy machine does not fail it."""
    started = time.process_time()
    rewrites.cited_urls(text)
    assert time.process_time() - started < 1.0


def test_a_rewrite_longer_than_a_turn_is_refused_on_the_api_and_the_page(
    lease: Assignment, worker: Any, api_client: Any, client_for: Client, settings: Any
) -> None:
    too_long = "[" * (settings.TURN_MAX_CHARS + 1)
    body = {"claims_external": True, "common_knowledge": False, "rewrite": too_long}
    api_client.force_authenticate(worker)

    answer = api_client.post(f"/api/v1/assignments/{lease.pk}/submit", body, format="json")
    page = client_for.post(
        reverse("work-rewrite-submit", args=[lease.pk]),
        {"claims_external": "yes", "common_knowledge": "no", "rewrite": too_long},
    )

    message = "Rewrite: at most 10,000 characters, like any turn; yours has 10,001."
    assert (answer.status_code, answer.json()) == (400, {"detail": message})
    assert page.status_code == 400
    assert message in page.content.decode()
    assert 'maxlength="10000"' in page.content.decode()
    assert not Rewrite.objects.exists()
    assert Assignment.objects.get(pk=lease.pk).state == Assignment.State.LEASED


@pytest.mark.django_db(transaction=True)
def test_the_rewrite_is_scanned_before_the_assignment_is_locked(
    corpus: None, worker: Any, api_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No transaction around the test: one open during the scan is the submission's, whose
    lock on the assignment (on SQLite: on the whole database) would wait for the scan."""
    lease = assignments.assignment_lease_next(worker=worker, campaign=rewrite_campaign())
    assert lease is not None
    rewrites.rewrite_research(assignment_id=lease.pk, worker=worker, query="largest cat Americas")
    scanned_in_transaction: list[bool] = []

    def scan(text: str) -> list[str]:
        scanned_in_transaction.append(connection.in_atomic_block)
        return cited_urls(text)

    monkeypatch.setattr(rewrites, "cited_urls", scan)
    api_client.force_authenticate(worker)
    body = {"claims_external": True, "common_knowledge": False, "rewrite": REWRITTEN}

    answer = api_client.post(f"/api/v1/assignments/{lease.pk}/submit", body, format="json")

    assert answer.status_code == 201, answer.content
    assert answer.json()["rewrite"]["cited_urls"] == [JAGUAR_URL]
    assert scanned_in_transaction == [False]


# --- a research session is its worker's (issue 12) -------------------------------------------------

QUERY_URL = "/api/v1/toolset/query"


def test_only_the_assignments_worker_can_query_in_its_research_session(
    corpus: None, lease: Assignment, worker: Any, api_client: Any, users: dict[Role, Any]
) -> None:
    session = f"assignment-{lease.pk}"
    body = {"query": "largest cat Americas", "session": session, "tool": "search"}

    for intruder in (UserFactory(role=Role.CROWDWORKER), users[Role.ADMIN], users[Role.RESEARCHER]):
        api_client.force_authenticate(intruder)
        refused = api_client.post(QUERY_URL, body, format="json")
        assert refused.status_code == 403, refused.content
        assert refused.json() == {"detail": f"{session}: This assignment belongs to another worker."}
    assert not ToolCall.objects.exists()

    api_client.force_authenticate(worker)
    unknown = api_client.post(QUERY_URL, {**body, "session": "assignment-999999999"}, format="json")
    mine = api_client.post(QUERY_URL, body, format="json")

    assert unknown.status_code == 404
    assert mine.status_code == 200
    assert mine.json()["results"][0]["url"] == JAGUAR_URL
    assert ToolCall.objects.get().actor_user == worker


def test_a_research_session_takes_no_query_once_its_lease_ran_out(
    corpus: None, lease: Assignment, worker: Any, api_client: Any
) -> None:
    Assignment.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    api_client.force_authenticate(worker)

    answer = api_client.post(
        QUERY_URL, {"query": "jaguar", "session": f"assignment-{lease.pk}"}, format="json"
    )

    assert answer.status_code == 409
    assert not ToolCall.objects.exists()


def test_the_page_shows_only_the_searches_a_submission_may_cite(
    corpus: None, client_for: Client, lease: Assignment, worker: Any
) -> None:
    """Calls of someone else in the session (from before sessions had owners, or a model's) are
    neither shown nor citable: the page and the submission read the same calls."""
    session = f"assignment-{lease.pk}"
    ToolCall.objects.create(
        session=session,
        actor_user=UserFactory(role=Role.CROWDWORKER),
        tool="search",
        query="planted lion query",
        results=[{"rank": 1, "title": "Lion", "url": LION_URL, "snippet": "The lion is a large cat."}],
    )
    rewrites.rewrite_research(assignment_id=lease.pk, worker=worker, query="largest cat Americas")

    html = client_for.get(reverse("work-rewrite", args=[lease.item.campaign_id])).content.decode()

    assert "largest cat Americas" in html
    assert "planted lion query" not in html
    assert LION_URL not in html
    refused = client_for.post(
        reverse("work-rewrite-submit", args=[lease.pk]),
        {"claims_external": "yes", "common_knowledge": "no", "rewrite": f"Lions [Lion]({LION_URL})."},
    )
    assert refused.status_code == 400
    assert f"{LION_URL} was not among the search results" in refused.content.decode()
