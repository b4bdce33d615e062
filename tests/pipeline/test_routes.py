"""Route classes: exact paths, their aliases, and the prefix rules for every other path."""

from __future__ import annotations

from fortress.pipeline import routes
from fortress.pipeline.routes import Kind


def test_exact_paths_and_aliases_are_their_routes() -> None:
    assert routes.classify("/api/show") is routes.SHOW
    assert routes.classify("/chat/completions") is routes.classify("/v1/chat/completions")
    assert routes.classify("/v1/chat/completions").kind is Kind.OPENAI


def test_other_paths_are_classified_by_prefix_and_never_kept() -> None:
    """A path that is not a route as it is gets its prefix's route; the table does not learn it, so
    random paths cannot grow it."""
    size = len(routes.EXACT)
    cases = {
        "/api/blobs/sha256:abc": routes.BLOBS,
        "/api/user/keys": routes.classify("/api/user/x"),
        "/api/nothing": routes.UNKNOWN_API,
        "/v1/models/llama3": routes.V1_MODEL,
        "/models/llama3": routes.V1_MODEL,
        "/v1/models/": routes.UNKNOWN_V1,
        "/v1/nothing": routes.UNKNOWN_V1,
        "/nothing": routes.UNKNOWN,
        "": routes.UNKNOWN,
    }
    for path, route in cases.items():
        assert routes.classify(path) is route, path
    assert routes.classify("/api/user/keys").kind is Kind.NEVER
    for n in range(1000):
        assert routes.classify(f"/api/random/{n}") is routes.UNKNOWN_API
    assert len(routes.EXACT) == size and "/api/nothing" not in routes.EXACT
