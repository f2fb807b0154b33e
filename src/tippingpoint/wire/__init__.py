"""Sans-io wire codecs: no sockets, no event loop, bytes in and values out."""
