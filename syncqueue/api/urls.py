from django.urls import path

from . import views

urlpatterns = [
    path("sync/queue", views.SyncQueueView.as_view(), name="sync-queue"),
    path("sync/status/<str:device_id>", views.SyncStatusView.as_view(), name="sync-status"),
    path("sync/changes", views.SyncChangesView.as_view(), name="sync-changes"),
    path("conflicts/pending/<uuid:user_id>", views.PendingConflictsView.as_view(), name="conflicts-pending"),
    path("conflicts/resolve", views.ResolveConflictView.as_view(), name="conflicts-resolve"),
]
