import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harry_realtime.settings")
django_asgi_app = get_asgi_application()

# Admin and API-docs assets are served by whitenoise (settings.MIDDLEWARE); no CDN.
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from events.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter(websocket_urlpatterns),
    }
)

from harry_realtime.heap import settle_startup_heap  # noqa: E402

settle_startup_heap()
