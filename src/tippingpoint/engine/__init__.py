"""The load generator's I/O engine: client protocol, pacing loop, recording."""
