"""The backend: the article's ping/pong server with ``sleep`` and ``times`` headers."""

from tippingpoint.server.config import ServeConfig
from tippingpoint.server.supervisor import ServeError, serve

__all__ = ["ServeConfig", "ServeError", "serve"]
