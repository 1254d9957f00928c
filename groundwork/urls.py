from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from annotation import api as annotation_api
from annotation import views as annotation_views
from dialogs import api as dialogs_api
from dialogs import views as dialogs_views
from groundwork import health, views
from toolset import api as toolset_api
from trainer import api as trainer_api

router = DefaultRouter(trailing_slash=True)
router.register("dialogs", dialogs_api.DialogViewSet, basename="dialog")
router.register("dialog-exports", dialogs_api.DialogExportViewSet, basename="dialog-export")
router.register("datasets", trainer_api.DatasetViewSet, basename="dataset")
router.register("training-jobs", trainer_api.TrainingJobViewSet, basename="training-job")
router.register("models", trainer_api.ModelVersionViewSet, basename="model-version")

admin.site.site_header = "Groundwork"
admin.site.site_title = "Groundwork admin"
admin.site.index_title = "Campaigns, data and models"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("work/", annotation_views.work_home, name="work"),
    path("work/campaigns/<int:campaign_id>/", annotation_views.rate, name="work-rate"),
    path("work/assignments/<int:assignment_id>/submit", annotation_views.submit, name="work-submit"),
    path("work/assignments/<int:assignment_id>/skip", annotation_views.skip, name="work-skip"),
    path("work/campaigns/<int:campaign_id>/rewrite/", annotation_views.rewrite, name="work-rewrite"),
    path(
        "work/assignments/<int:assignment_id>/research",
        annotation_views.rewrite_research,
        name="work-rewrite-research",
    ),
    path(
        "work/assignments/<int:assignment_id>/rewrite",
        annotation_views.rewrite_submit,
        name="work-rewrite-submit",
    ),
    path("work/chat/", annotation_views.chat_home, name="work-chat"),
    path("work/chat/start", annotation_views.chat_start, name="work-chat-start"),
    path("work/chat/<int:chat_id>/", annotation_views.chat_detail, name="work-chat-detail"),
    path("work/chat/<int:chat_id>/say", annotation_views.chat_say, name="work-chat-say"),
    path("work/chat/<int:chat_id>/retry", annotation_views.chat_retry, name="work-chat-retry"),
    path("work/chat/<int:chat_id>/finish", annotation_views.chat_finish, name="work-chat-finish"),
    path(
        "work/chat/<int:chat_id>/turns/<int:turn_id>/flag",
        annotation_views.chat_flag,
        name="work-chat-flag",
    ),
    path("dialogs/", dialogs_views.dialog_list, name="dialog-list"),
    path("dialogs/<path:external_id>/", dialogs_views.dialog_detail, name="dialog-detail"),
    path("admin/", admin.site.urls),
    path("api/v1/auth/token/", views.ObtainTokenView.as_view(), name="api-token"),
    path("api/v1/tasks/next", annotation_api.NextTaskView.as_view(), name="task-next"),
    path(
        "api/v1/assignments/<int:assignment_id>/submit",
        annotation_api.SubmitView.as_view(),
        name="assignment-submit",
    ),
    path(
        "api/v1/assignments/<int:assignment_id>/skip",
        annotation_api.SkipView.as_view(),
        name="assignment-skip",
    ),
    path(
        "api/v1/campaigns/<int:campaign_id>/judgments",
        annotation_api.ImportJudgmentsView.as_view(),
        name="campaign-judgments-import",
    ),
    path(
        "api/v1/campaigns/<int:campaign_id>/consensus",
        annotation_api.ConsensusExportView.as_view(),
        name="campaign-consensus-export",
    ),
    path("api/v1/chats/", annotation_api.ChatStartView.as_view(), name="chat-start"),
    path("api/v1/chats/<int:chat_id>/", annotation_api.ChatDetailView.as_view(), name="chat-detail"),
    path(
        "api/v1/chats/<int:chat_id>/messages", annotation_api.ChatMessagesView.as_view(), name="chat-messages"
    ),
    path("api/v1/chats/<int:chat_id>/finish", annotation_api.ChatFinishView.as_view(), name="chat-finish"),
    path(
        "api/v1/chats/<int:chat_id>/turns/<int:turn_id>/flag",
        annotation_api.ChatFlagView.as_view(),
        name="chat-turn-flag",
    ),
    path("api/v1/toolset/query", toolset_api.ToolsetQueryView.as_view(), name="toolset-query"),
    path(
        "api/v1/toolset/documents", toolset_api.DocumentImportView.as_view(), name="toolset-documents-import"
    ),
    path("api/v1/", include((router.urls, "api"))),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]
