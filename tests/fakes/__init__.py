"""Test doubles that behave like the real thing: ``apiserver.FakeApiServer``, a local
HTTP server that answers Sentinel's Kubernetes Events requests as the API server does."""
