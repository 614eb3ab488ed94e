from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from board.views import BoardSnapshotView

from .health import healthz
from .metrics import metrics

handler404 = "harry_realtime.api.not_found"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("board/", include("board.urls")),
    path("api/realtime/board", BoardSnapshotView.as_view(), name="realtime-board"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(url_name="schema", template_name="harry_api/redoc.html"),
        name="api-redoc",
    ),
    path("api/", include("school.api.urls")),
    path("api/realtime/", include("events.api.urls")),
    path("api/realtime/", include("presence.api.urls")),
    path("api/realtime/", include("syncqueue.api.urls")),
    path("api/notifications/", include("notifications.api.urls")),
    path("api/culture/", include("culture.api.urls")),
    path("realtime/v1/", include("events.api.realtime_urls")),
]
