from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, register_converter
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from annotation import api as annotation_api
from annotation import rater_api
from annotation.views import chat as chat_views
from annotation.views import evaluation as evaluation_views
from annotation.views import rating as rating_views
from annotation.views import rewrite as rewrite_views
from dialogs import api as dialogs_api
from dialogs import views as dialogs_views
from groundwork import health, views
from groundwork.parsers import DatabaseIdConverter, PrintableTextConverter
from toolset import api as toolset_api
from trainer import api as trainer_api
from trainer import evaluation_api
from trainer import views as trainer_views

# <id:...>: a database id (1 to 2**63 - 1); a larger number is no address here (404).
register_converter(DatabaseIdConverter, "id")
# <text:...>: an external id (slashes allowed, control characters not: 404).
register_converter(PrintableTextConverter, "text")

router = DefaultRouter(trailing_slash=True)
# No ".json" format suffixes: dialog ids and file names have dots of their own (dialogs/a.json is
# the dialog "a.json", files/manifest.json the file). ?format= still chooses a renderer.
router.include_format_suffixes = False
router.register("dialogs", dialogs_api.DialogViewSet, basename="dialog")
router.register("dialog-exports", dialogs_api.DialogExportViewSet, basename="dialog-export")
router.register("evaluation-sets", dialogs_api.EvaluationSetViewSet, basename="evaluation-set")
router.register("datasets", trainer_api.DatasetViewSet, basename="dataset")
router.register("training-jobs", trainer_api.TrainingJobViewSet, basename="training-job")
router.register("models", trainer_api.ModelVersionViewSet, basename="model-version")
router.register("evaluations", evaluation_api.EvaluationViewSet, basename="evaluation")

api_urls = [
    *router.urls,
    # A dataset's file at its documented URL, without a trailing slash (a router route has one);
    # the download links made before, with the slash, still work (left out of the schema).
    path(
        "datasets/<id:pk>/files/<str:name>",
        trainer_api.DatasetViewSet.as_view({"get": "file"}),
        name="dataset-file",
    ),
    path(
        "datasets/<id:pk>/files/<str:name>/",
        trainer_api.DatasetViewSet.as_view({"get": "file"}, schema=None),
    ),
    # An evaluation set's report: the trainer reads it (dialogs, which serves the sets, imports no app).
    path(
        "evaluation-sets/<id:pk>/report",
        trainer_api.EvaluationReportView.as_view(),
        name="evaluation-set-report",
    ),
]

admin.site.site_header = "Groundwork"
admin.site.site_title = "Groundwork admin"
admin.site.index_title = "Campaigns, data and models"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("work/", rating_views.work_home, name="work"),
    path("work/campaigns/<id:campaign_id>/", rating_views.rate, name="work-rate"),
    path("work/assignments/<id:assignment_id>/submit", rating_views.submit, name="work-submit"),
    path("work/assignments/<id:assignment_id>/skip", rating_views.skip, name="work-skip"),
    path("work/campaigns/<id:campaign_id>/rewrite/", rewrite_views.rewrite, name="work-rewrite"),
    path(
        "work/assignments/<id:assignment_id>/research",
        rewrite_views.rewrite_research,
        name="work-rewrite-research",
    ),
    path(
        "work/assignments/<id:assignment_id>/rewrite",
        rewrite_views.rewrite_submit,
        name="work-rewrite-submit",
    ),
    path("work/campaigns/<id:campaign_id>/write/", evaluation_views.write, name="work-write"),
    path(
        "work/assignments/<id:assignment_id>/write", evaluation_views.write_submit, name="work-write-submit"
    ),
    path("work/campaigns/<id:campaign_id>/compare/", evaluation_views.compare, name="work-compare"),
    path(
        "work/assignments/<id:assignment_id>/compare",
        evaluation_views.compare_submit,
        name="work-compare-submit",
    ),
    path("work/chat/", chat_views.chat_home, name="work-chat"),
    path("work/chat/start", chat_views.chat_start, name="work-chat-start"),
    path("work/chat/<id:chat_id>/", chat_views.chat_detail, name="work-chat-detail"),
    path("work/chat/<id:chat_id>/say", chat_views.chat_say, name="work-chat-say"),
    path("work/chat/<id:chat_id>/retry", chat_views.chat_retry, name="work-chat-retry"),
    path("work/chat/<id:chat_id>/finish", chat_views.chat_finish, name="work-chat-finish"),
    path(
        "work/chat/<id:chat_id>/turns/<id:turn_id>/flag",
        chat_views.chat_flag,
        name="work-chat-flag",
    ),
    path("dialogs/", dialogs_views.dialog_list, name="dialog-list"),
    path("dialogs/<text:external_id>/", dialogs_views.dialog_detail, name="dialog-detail"),
    # Beside the admin, in its look (before it: the admin's catch-all would answer first).
    path(
        "admin/trainer/evaluation-sets/<id:set_id>/report/",
        trainer_views.evaluation_report_page,
        name="evaluation-report",
    ),
    path("admin/", admin.site.urls),
    path("api/v1/auth/token/", views.ObtainTokenView.as_view(), name="api-token"),
    path("api/v1/tasks/next", annotation_api.NextTaskView.as_view(), name="task-next"),
    path(
        "api/v1/assignments/<id:assignment_id>/submit",
        annotation_api.SubmitView.as_view(),
        name="assignment-submit",
    ),
    path(
        "api/v1/assignments/<id:assignment_id>/skip",
        annotation_api.SkipView.as_view(),
        name="assignment-skip",
    ),
    path(
        "api/v1/campaigns/<id:campaign_id>/judgments",
        annotation_api.ImportJudgmentsView.as_view(),
        name="campaign-judgments-import",
    ),
    path(
        "api/v1/campaigns/<id:campaign_id>/consensus",
        annotation_api.ConsensusExportView.as_view(),
        name="campaign-consensus-export",
    ),
    path(
        "api/v1/campaigns/<id:campaign_id>/rater-model",
        rater_api.RaterModelView.as_view(),
        name="campaign-rater-model",
    ),
    path("api/v1/chats/", annotation_api.ChatStartView.as_view(), name="chat-start"),
    path("api/v1/chats/<id:chat_id>/", annotation_api.ChatDetailView.as_view(), name="chat-detail"),
    path(
        "api/v1/chats/<id:chat_id>/messages", annotation_api.ChatMessagesView.as_view(), name="chat-messages"
    ),
    path("api/v1/chats/<id:chat_id>/finish", annotation_api.ChatFinishView.as_view(), name="chat-finish"),
    path(
        "api/v1/chats/<id:chat_id>/turns/<id:turn_id>/flag",
        annotation_api.ChatFlagView.as_view(),
        name="chat-turn-flag",
    ),
    path("api/v1/toolset/query", toolset_api.ToolsetQueryView.as_view(), name="toolset-query"),
    path(
        "api/v1/toolset/documents", toolset_api.DocumentImportView.as_view(), name="toolset-documents-import"
    ),
    path("api/v1/", include((api_urls, "api"))),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's setup script as a file of its own (?script), not inline:
    # the Content-Security-Policy runs no inline script.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="swagger-ui"),
]

handler404 = "groundwork.views.page_not_found"
