from django.urls import path

from .views import CulturalContextView

urlpatterns = [path("context", CulturalContextView.as_view(), name="culture-context")]
