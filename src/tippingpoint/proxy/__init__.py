"""Real HAProxy, driven by tippingpoint: configuration, processes, statistics."""
