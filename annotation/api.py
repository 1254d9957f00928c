"""REST API for crowd work: the next task, submitting and skipping assignments, chatting with the
model (start, messages, finish, flags)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import consensus_export, rules, selectors
from annotation.errors import WorkerBlocked
from annotation.models import Campaign, Chat, ChatPurpose, FlagReason, TurnFlag
from annotation.services import assignments, chats, evaluation_tasks, judgment_imports, rewrites
from dialogs.models import Mode, Turn
from groundwork.parsers import IMPORT_PARSERS, DatabaseIdField, body_records, query_number
from groundwork.roles import Role, has_role
from groundwork.throttling import ExplainedThrottles

if TYPE_CHECKING:
    from django.contrib.auth.models import User

TOOL_CALL_IDS_MAX = 1000


class SubmitSerializer(serializers.Serializer):
    """Rating tasks send ``answers``; rewrite tasks send ``claims_external`` and the rest; human
    baseline tasks the ``response`` the worker wrote; side-by-side tasks their ``choice``."""

    answers = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False)
    claims_external = serializers.BooleanField(required=False)
    common_knowledge = serializers.BooleanField(required=False, allow_null=True, default=None)
    rewrite = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False, default="")
    citations = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    candidate_labels = serializers.DictField(
        child=serializers.ChoiceField(choices=["correct", "incorrect"]), required=False, default=dict
    )
    # Accepted for clients that track them; the stored ones are the session's own searches.
    tool_call_ids = serializers.ListField(
        child=DatabaseIdField(), required=False, default=list, max_length=TOOL_CALL_IDS_MAX
    )

    response = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="Human baseline tasks: the next turn.",
    )
    choice = serializers.ChoiceField(
        choices=rules.PAIRWISE_CHOICES,
        required=False,
        help_text="Side-by-side tasks: 1 (Response 1 is better), 2 (Response 2 is better) or tie.",
    )

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if sum(key in data for key in ("answers", "claims_external", "response", "choice")) != 1:
            raise serializers.ValidationError(
                "Send one of answers (rating tasks), claims_external (rewrite tasks), response (human "
                "baseline tasks) or choice (side-by-side tasks)."
            )
        return data


def _next(*, worker: User, campaign: Campaign) -> dict[str, Any]:
    """``next``: the worker's next assignment in the campaign, or null (and why, when blocked)."""
    try:
        upcoming = assignments.assignment_lease_next(worker=worker, campaign=campaign)
    except WorkerBlocked as exc:
        return {"next": None, "next_blocked": str(exc)}
    return {"next": selectors.task_payload(upcoming) if upcoming else None}


class NextTaskView(APIView):
    """The worker's next item to rate; 204 when nothing is left for them."""

    permission_classes = [has_role(Role.CROWDWORKER)]

    @extend_schema(
        parameters=[
            OpenApiParameter("kind", OpenApiTypes.STR, enum=Campaign.Kind.values),
            OpenApiParameter("campaign", OpenApiTypes.INT, description="Only this campaign."),
        ],
        responses={
            200: OpenApiTypes.OBJECT,
            204: OpenApiResponse(description="Nothing left for you."),
            400: OpenApiResponse(description="An unknown kind, or a campaign that is not an id."),
            403: OpenApiResponse(description="Not a crowdworker, or blocked from the campaign."),
        },
    )
    def get(self, request: Request) -> Response:
        kind = request.query_params.get("kind")
        if kind and kind not in Campaign.Kind.values:
            kinds = ", ".join(Campaign.Kind.values)
            return Response(
                {"detail": f"kind: unknown campaign kind {kind!r} (one of {kinds})."},
                status=status.HTTP_400_BAD_REQUEST,
            )
        campaign_id = query_number(request.query_params, "campaign", minimum=1)
        assignment = assignments.assignment_lease_any(worker=request.user, kind=kind, campaign_id=campaign_id)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(selectors.task_payload(assignment))


class SubmitView(APIView):
    """Submit answers for an assignment. The response carries the next assignment of the same
    campaign, so a rater waits for one round trip per item."""

    permission_classes = [has_role(Role.CROWDWORKER)]

    @extend_schema(
        request=SubmitSerializer,
        responses={
            201: OpenApiTypes.OBJECT,
            200: OpenApiResponse(
                OpenApiTypes.OBJECT, description="The same submission again: the stored one."
            ),
            400: OpenApiResponse(description="Missing or unknown answers."),
            403: OpenApiResponse(description="Another worker's assignment."),
            409: OpenApiResponse(description="The lease ran out, or other answers were already stored."),
        },
    )
    def post(self, request: Request, assignment_id: int) -> Response:
        data = request.data
        if not (isinstance(data, dict) and data.keys() == {"answers"}):
            serializer = SubmitSerializer(data=data)
            serializer.is_valid(raise_exception=True)
            data = serializer.validated_data
        # else a rating: its answers alone, which judgment_submit checks (question by question,
        # with messages); a serializer would copy its declared fields on every request.
        extra: dict[str, Any] = {}
        if "answers" in data:
            result = assignments.judgment_submit(
                assignment_id=assignment_id, worker=request.user, answers=data["answers"]
            )
        elif "response" in data:
            written = evaluation_tasks.human_response_submit(
                assignment_id=assignment_id, worker=request.user, text=data["response"]
            )
            body = {"response": written.response.turn.text}
            return _submitted(request, written.assignment, body, written.created)
        elif "choice" in data:
            chosen = evaluation_tasks.pairwise_submit(
                assignment_id=assignment_id, worker=request.user, choice=data["choice"]
            )
            # The choice as made, not its judgment: that would tell which response was a's.
            return _submitted(request, chosen.assignment, {"choice": data["choice"]}, chosen.created)
        else:
            result = rewrites.rewrite_submit(
                assignment_id=assignment_id,
                worker=request.user,
                claims_external=data["claims_external"],
                common_knowledge=data["common_knowledge"],
                rewrite=data["rewrite"],
                citations=data["citations"],
                candidate_labels=data["candidate_labels"],
            )
            extra = {
                "rewrite": {
                    "text": result.rewrite.text,
                    "cited_urls": result.rewrite.cited_urls,
                    "candidate_labels": result.rewrite.candidate_labels,
                }
            }
        extra = {"judgments": {j.attribute: j.value for j in result.judgments}, **extra}
        return _submitted(request, result.assignment, extra, result.created)


def _submitted(request: Request, assignment: Any, extra: dict[str, Any], created: bool) -> Response:
    """201 (200 for the same submission again) with the next assignment of the same campaign."""
    body = {
        "assignment_id": assignment.pk,
        **extra,
        **_next(worker=request.user, campaign=assignment.item.campaign),
    }
    return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class SkipView(APIView):
    """Give an item back; it is not offered to this worker again. Returns the next assignment."""

    permission_classes = [has_role(Role.CROWDWORKER)]

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT, 403: None, 404: None, 409: None})
    def post(self, request: Request, assignment_id: int) -> Response:
        skipped = assignments.assignment_skip(assignment_id=assignment_id, worker=request.user)
        return Response({"skipped": skipped.pk, **_next(worker=request.user, campaign=skipped.item.campaign)})


JudgmentImportResultSerializer = inline_serializer(
    "JudgmentImportResult",
    {
        "items_created": serializers.IntegerField(),
        "items_existing": serializers.IntegerField(),
        "raters_created": serializers.IntegerField(),
        "ratings": serializers.IntegerField(),
        "judgments": serializers.IntegerField(),
        "labelled": serializers.IntegerField(),
        "incomplete": serializers.IntegerField(
            help_text="Items of the campaign with fewer judgments than its raters per item: no labels yet."
        ),
    },
)


class ImportJudgmentsView(APIView):
    """Import judgments made elsewhere into a campaign, all or nothing; its consensus is recomputed."""

    permission_classes = [has_role(Role.ADMIN)]
    parser_classes = IMPORT_PARSERS

    @extend_schema(
        request={"application/json": OpenApiTypes.OBJECT, "application/x-ndjson": OpenApiTypes.STR},
        responses={201: JudgmentImportResultSerializer, 400: OpenApiTypes.OBJECT, 404: None},
        description=(
            "application/x-ndjson with one judgment per line, or a JSON list of judgments: "
            '`{"item": {"key", "context": [{"speaker", "text"}], "response"}, "rater", "attribute", '
            '"value": "yes"|"no"|"maybe"}`; safety campaigns: `"attribute": "violates"` and `"objective"`. '
            "Same format as `import_judgments`. On any bad line nothing is written and 400 lists each "
            "error with its line (position in a JSON list) and field."
        ),
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        campaign = get_object_or_404(Campaign, pk=campaign_id)
        lines = body_records(
            request.data, lines=judgment_imports.parse_jsonl, objects=judgment_imports.parse_objects
        )
        result = judgment_imports.judgments_import(campaign=campaign, lines=lines, source="api")
        return Response(asdict(result), status=status.HTTP_201_CREATED)


class ConsensusExportView(APIView):
    """A campaign's consensus labels, streamed: JSONL (one line per labelled item) or CSV. Incomplete
    items (not all raters answered) have no labels and are left out; ``X-Incomplete-Items`` counts them."""

    permission_classes = [has_role(Role.ADMIN, Role.RESEARCHER)]

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # ?format= names the export's format, not a DRF renderer: errors are answered in JSON.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        parameters=[OpenApiParameter("format", OpenApiTypes.STR, enum=consensus_export.EXPORT_FORMATS)],
        description=(
            "Only complete items are exported: those all the campaign's raters per item have answered, "
            "or, in a campaign that stops once the answer is decided, those no remaining rater could "
            "change. Each item says how many raters it had (`raters`). Incomplete items have no labels "
            "and are left out; the `X-Incomplete-Items` response header says how many there are."
        ),
        responses={
            (200, "application/x-ndjson"): OpenApiTypes.BINARY,
            (200, "text/csv"): OpenApiTypes.BINARY,
            400: OpenApiTypes.OBJECT,
            404: None,
        },
    )
    def get(self, request: Request, campaign_id: int) -> StreamingHttpResponse | Response:
        campaign = get_object_or_404(Campaign, pk=campaign_id)
        format = request.query_params.get("format", "jsonl")
        lines = consensus_export.consensus_lines(campaign=campaign, format=format)
        response = StreamingHttpResponse(lines, content_type=consensus_export.CONTENT_TYPES[format])
        response["Content-Disposition"] = f'attachment; filename="consensus-{campaign.pk}.{format}"'
        incomplete = consensus_export.incomplete_count(campaign=campaign)
        response[consensus_export.INCOMPLETE_HEADER] = str(incomplete)
        return response


# --- chats (METHOD.md §1) ---------------------------------------------------------------------


class ChatStartSerializer(serializers.Serializer):
    purpose = serializers.ChoiceField(choices=ChatPurpose.choices)
    mode = serializers.ChoiceField(
        choices=Mode.choices, required=False, help_text="Safety chats only; default natural."
    )
    role = serializers.SlugField(
        required=False, help_text="The role's slug; role chats only, and required there."
    )


class ChatMessageSerializer(serializers.Serializer):
    text = serializers.CharField()


class FlagRequestSerializer(serializers.Serializer):
    reason = serializers.ChoiceField(choices=FlagReason.choices)
    note = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=chats.NOTE_MAX_CHARS
    )


class FlagSerializer(serializers.ModelSerializer):
    class Meta:
        model = TurnFlag
        fields = ["turn", "reason", "note", "created_at"]


class PreambleTurnSerializer(serializers.Serializer):
    speaker = serializers.CharField()
    text = serializers.CharField()


class ChatTurnSerializer(serializers.ModelSerializer):
    flag = serializers.SerializerMethodField(help_text="Your flag on this model turn (adversarial chats).")

    class Meta:
        model = Turn
        fields = ["id", "index", "speaker", "text", "flag"]

    @extend_schema_field(FlagSerializer(allow_null=True))
    def get_flag(self, turn: Turn) -> dict[str, Any] | None:
        flags = getattr(turn, "own_flags", [])
        return FlagSerializer(flags[0]).data if flags else None


class ChatSerializer(serializers.ModelSerializer):
    """A chat with its turns; ``waiting`` is true while the model's answer is pending. The
    serializer's context carries the turns (``selectors.chat_turns``)."""

    dialog = serializers.CharField(source="dialog.external_id", read_only=True)
    role = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    turn_count = serializers.SerializerMethodField(help_text="Your messages so far (one turn each).")
    min_turns = serializers.SerializerMethodField(help_text="You can finish from this many turns on.")
    max_turns = serializers.SerializerMethodField(help_text="You cannot send more messages than this.")
    preamble = serializers.SerializerMethodField(help_text="Role chats: the role's opening turns.")
    turns = serializers.SerializerMethodField()

    class Meta:
        model = Chat
        fields = [
            "id",
            "dialog",
            "purpose",
            "mode",
            "role",
            "status",
            "waiting",
            "error",
            "turn_count",
            "min_turns",
            "max_turns",
            "created_at",
            "finished_at",
            "preamble",
            "turns",
        ]

    def get_turn_count(self, obj: Chat) -> int:
        return sum(1 for turn in self.context["turns"] if turn.speaker == "user")

    def get_min_turns(self, obj: Chat) -> int:
        return chats.turn_range(obj.purpose).min

    def get_max_turns(self, obj: Chat) -> int:
        return chats.turn_range(obj.purpose).max

    @extend_schema_field(PreambleTurnSerializer(many=True))
    def get_preamble(self, obj: Chat) -> list[dict[str, Any]]:
        return list(obj.role.preamble) if obj.role_id else []

    @extend_schema_field(ChatTurnSerializer(many=True))
    def get_turns(self, obj: Chat) -> list[dict[str, Any]]:
        return ChatTurnSerializer(self.context["turns"], many=True).data


class ChatFinishedSerializer(ChatSerializer):
    campaign = serializers.IntegerField(
        allow_null=True, read_only=True, help_text="The campaign the model turns went to, to be rated."
    )
    items_added = serializers.IntegerField(read_only=True)

    class Meta(ChatSerializer.Meta):
        fields = [*ChatSerializer.Meta.fields, "campaign", "items_added"]


def _chat_data(current: Chat) -> dict[str, Any]:
    return ChatSerializer(current, context={"turns": selectors.chat_turns(chat=current)}).data


RATE_LIMITED = OpenApiResponse(
    description="Too many requests: `detail` says when you can go on, `Retry-After` in how many seconds."
)


class ChatStartView(ExplainedThrottles, APIView):
    """Start a chat with the serving model. Starts are rate-limited per worker, and a worker has
    at most ``CHAT_MAX_OPEN`` open chats (429 until they finish one)."""

    permission_classes = [has_role(Role.CROWDWORKER)]
    throttle_classes = [chats.ChatStartThrottle]

    @extend_schema(
        request=ChatStartSerializer,
        responses={201: ChatSerializer, 400: OpenApiTypes.OBJECT, 429: RATE_LIMITED},
    )
    def post(self, request: Request) -> Response:
        serializer = ChatStartSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        started = chats.chat_start(
            worker=request.user,
            purpose=data["purpose"],
            mode=data.get("mode"),
            role=selectors.role_by_slug(data["role"]) if data.get("role") else None,
        )
        return Response(_chat_data(started), status=status.HTTP_201_CREATED)


class ChatDetailView(APIView):
    """One of your chats with its turns; poll it while ``waiting`` is true for the model's answer."""

    permission_classes = [has_role(Role.CROWDWORKER)]

    @extend_schema(responses={200: ChatSerializer, 404: None})
    def get(self, request: Request, chat_id: int) -> Response:
        return Response(_chat_data(selectors.chat_for_worker(worker=request.user, chat_id=chat_id)))


class ChatMessagesView(ExplainedThrottles, APIView):
    """Send a message; the model answers in the background (poll the chat until ``waiting`` is false).
    Messages are rate-limited per worker."""

    queues_work = True  # its POST answers 503 when the broker is down (groundwork.schema)

    permission_classes = [has_role(Role.CROWDWORKER)]
    throttle_classes = [chats.ChatMessageThrottle]

    @extend_schema(
        request=ChatMessageSerializer,
        responses={
            202: ChatTurnSerializer,
            400: OpenApiResponse(description="An empty message, or the chat has its maximum of turns."),
            404: None,
            409: OpenApiResponse(description="The model is still answering, or the chat is finished."),
            429: RATE_LIMITED,
        },
    )
    def post(self, request: Request, chat_id: int) -> Response:
        current = selectors.chat_for_worker(worker=request.user, chat_id=chat_id)
        serializer = ChatMessageSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        turn = chats.chat_say(chat=current, worker=request.user, text=serializer.validated_data["text"])
        return Response(ChatTurnSerializer(turn).data, status=status.HTTP_202_ACCEPTED)


class ChatFinishView(APIView):
    """Finish a chat that has its minimum of turns; its model turns go to the routed campaign."""

    permission_classes = [has_role(Role.CROWDWORKER)]

    @extend_schema(
        request=None,
        responses={
            200: ChatFinishedSerializer,
            400: OpenApiResponse(
                description="Fewer turns than the chat's minimum (the message says how many)."
            ),
            404: None,
            409: OpenApiResponse(description="The model is still answering."),
        },
    )
    def post(self, request: Request, chat_id: int) -> Response:
        current = selectors.chat_for_worker(worker=request.user, chat_id=chat_id)
        finished = chats.chat_finish(chat=current, worker=request.user)
        body = {
            **_chat_data(finished.chat),
            "campaign": finished.campaign.pk if finished.campaign else None,
            "items_added": finished.items_added,
        }
        return Response(body)


class ChatFlagView(APIView):
    """Flag a model turn of your adversarial chat with a reason; flagging again changes it."""

    permission_classes = [has_role(Role.CROWDWORKER)]

    @extend_schema(
        request=FlagRequestSerializer,
        responses={
            201: FlagSerializer,
            400: OpenApiResponse(description="Not an adversarial chat, not a model turn, or a bad reason."),
            404: None,
        },
    )
    def post(self, request: Request, chat_id: int, turn_id: int) -> Response:
        current = selectors.chat_for_worker(worker=request.user, chat_id=chat_id)
        turn = Turn.objects.filter(pk=turn_id, dialog_id=current.dialog_id).first()
        if turn is None:
            raise NotFound("There is no such turn in this chat.")
        serializer = FlagRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        flag = chats.chat_flag(turn=turn, worker=request.user, **serializer.validated_data)
        return Response(FlagSerializer(flag).data, status=status.HTTP_201_CREATED)
