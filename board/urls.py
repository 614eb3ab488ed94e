from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

urlpatterns = [
    path("", views.board_page, name="board"),
    path("login/", views.BoardLoginView.as_view(), name="board-login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="/board/login/"), name="board-logout"),
    path("token", views.board_token, name="board-token"),
]
