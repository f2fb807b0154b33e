"""tippingpoint: load-test proxies and services and find their tipping point."""

__all__ = ["__version__"]

__version__ = "0.1.0"
