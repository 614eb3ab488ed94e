from django.urls import path

from .consumers import RealtimeSocket

websocket_urlpatterns: list = [
    path("realtime/v1/websocket", RealtimeSocket.as_asgi()),
]
