"""The web console: server-rendered pages over the three services' public APIs."""
