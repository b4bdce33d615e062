"""Pure playground logic: similarities, PCA, set separation, the scatter SVG, input checks, relay wording."""

from __future__ import annotations

import math
import random
import re

import pytest

from admin import playground_input, projection, relay, scatter
from admin.playground_input import BadInput
from admin.wordsets import DEFAULT, SETS
from fortress.config import parse


def _planar(n: int, dims: int = 64) -> tuple[list[list[float]], list[tuple[float, float]]]:
    """Unit vectors on a circle inside a 2D plane of a `dims`-dimensional space, and their angles' points."""
    rng = random.Random(7)
    a = projection.unit([rng.gauss(0, 1) for _ in range(dims)])
    b = [rng.gauss(0, 1) for _ in range(dims)]
    k = sum(x * y for x, y in zip(a, b, strict=True))
    b = projection.unit([y - k * x for x, y in zip(a, b, strict=True)])
    angles = [2 * math.pi * i / n + 0.3 * math.sin(i) for i in range(n)]
    plane = [(math.cos(t), math.sin(t)) for t in angles]
    return [[c * x + s * y for x, y in zip(a, b, strict=True)] for c, s in plane], plane


def test_cosine_matrix_is_symmetric_with_a_unit_diagonal() -> None:
    sim = projection.cosine_matrix([[1, 0], [0, 2], [3, 3], [0, 0]])
    assert sim[0][1] == sim[1][0] == 0
    assert sim[0][2] == pytest.approx(math.sqrt(0.5))
    assert [sim[i][i] for i in range(3)] == pytest.approx([1, 1, 1])
    assert sim[3] == [0.0, 0.0, 0.0, 0.0]  # a zero vector is similar to nothing, not a division error


def test_pca_keeps_distances_of_points_that_lie_in_a_plane() -> None:
    vectors, _ = _planar(40)
    pca = projection.pca_2d(projection.cosine_matrix(vectors))
    assert sum(pca.explained) == pytest.approx(1.0, abs=1e-6)  # two axes hold everything
    assert pca.explained[0] >= pca.explained[1]
    for i in range(0, 40, 7):
        for j in range(1, 40, 5):
            original = math.dist(vectors[i], vectors[j])
            assert math.dist(pca.points[i], pca.points[j]) == pytest.approx(original, abs=1e-6)
    assert sum(x for x, _ in pca.points) == pytest.approx(0, abs=1e-9)  # centred


def test_pca_finds_the_main_direction_first_and_handles_small_inputs() -> None:
    rng = random.Random(3)
    # a long spread along one axis, a short one along another: PC1 must be the long one
    vectors = [[10 * rng.uniform(-1, 1), rng.uniform(-1, 1), 5.0] for _ in range(30)]
    pca = projection.pca_2d(projection.cosine_matrix(vectors))
    assert pca.explained[0] > 0.8
    assert projection.pca_2d([]).points == []
    assert projection.pca_2d([[1.0]]).points == [(0.0, 0.0)]
    same = projection.pca_2d(projection.cosine_matrix([[1, 2], [1, 2], [2, 4]]))
    assert same.points == [(0.0, 0.0)] * 3 and same.explained == (0.0, 0.0)


def test_pca_of_150_texts_in_3072_dimensions_is_quick_enough() -> None:
    rng = random.Random(1)
    vectors = [[rng.gauss(0, 1) for _ in range(3072)] for _ in range(150)]
    sim = projection.cosine_matrix(vectors)
    pca = projection.pca_2d(sim)
    assert len(pca.points) == 150 and all(math.isfinite(x) and math.isfinite(y) for x, y in pca.points)


def test_separation_scores_tight_sets_high_and_mixed_sets_low() -> None:
    rng = random.Random(5)
    centres = [[rng.gauss(0, 1) for _ in range(50)] for _ in range(3)]
    vectors, groups = [], []
    for g, centre in enumerate(centres):
        for _ in range(10):
            vectors.append([x + rng.gauss(0, 0.2) for x in centre])
            groups.append(g)
    sim = projection.cosine_matrix(vectors)
    tight = projection.separation(sim, groups)
    assert tight.silhouette is not None and tight.silhouette > 0.7
    assert tight.within is not None and tight.between is not None and tight.within > tight.between
    mixed = projection.separation(sim, [i % 3 for i in range(30)])  # labels that ignore the clusters
    assert mixed.silhouette is not None and mixed.silhouette < 0.1
    assert projection.separation(sim, [0] * 30).silhouette is None  # one set: nothing to separate


def test_separation_by_hand_and_set_means_and_nearest() -> None:
    sim = [[1.0, 0.9, 0.1], [0.9, 1.0, 0.3], [0.1, 0.3, 1.0]]
    s = projection.separation(sim, [0, 0, 1])
    # point 0: a = 0.1, b = 0.9 -> 0.888..; point 1: a = 0.1, b = 0.7 -> 0.857..; point 2 alone -> 0
    assert s.silhouette == pytest.approx((0.8 / 0.9 + 0.6 / 0.7 + 0) / 3)
    assert (s.within, s.between) == (pytest.approx(0.9), pytest.approx(0.2))
    means = projection.set_means(sim, [0, 0, 1], 2)
    assert means[0][0] == pytest.approx(0.9) and means[0][1] == pytest.approx(0.2) and means[1][1] is None
    assert projection.nearest(sim, 2, k=2) == [(1, 0.3), (0, 0.1)]


def test_scatter_draws_one_labelled_point_per_text_and_escapes_labels() -> None:
    svg = scatter.scatter(
        "plot <1>",
        [(0, 0), (1, 2), (-1, 0.5)],
        ["cat", "<b>car</b>", 'a"b'],
        [0, 1, 1],
        ["animals", "vehicles"],
    )
    assert svg.count('<g class="point">') == 3
    assert svg.count('<g class="legend">') == 2
    assert "<b>" not in svg and "&lt;b&gt;car&lt;/b&gt;" in svg and "a&quot;b" in svg
    assert 'class="series-1"' in svg and "plot &lt;1&gt;" in svg
    xs = [float(x) for x in re.findall(r'<circle class="series-\d" cx="([\d.]+)"', svg)[2:]]
    assert min(xs) >= scatter.PAD and max(xs) <= scatter.WIDTH - scatter.PAD
    assert "No texts" in scatter.scatter("empty", [], [], [], [])


def test_chat_body_keeps_known_fields_and_checks_them() -> None:
    body = playground_input.chat_body(
        {
            "model": "llama3.2:1b",
            "system": "Be brief.",
            "messages": [
                {"role": "user", "content": "hi", "images": ["aGVsbG8="], "image_types": ["image/png"]}
            ],
            "options": {"temperature": "0.5", "num_predict": 30, "seed": "", "top_p": None},
            "key": "ignored here",
        }
    )
    assert body == {
        "model": "llama3.2:1b",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi", "images": ["aGVsbG8="]},
        ],
        "stream": True,
        "options": {"temperature": 0.5, "num_predict": 30},
    }
    ok = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    for bad, says in [
        ({**ok, "model": ""}, "choose a model"),
        ({**ok, "messages": []}, "write a message first"),
        ({**ok, "messages": [{"role": "tool", "content": "x"}]}, "message role"),
        (
            {**ok, "messages": [{"role": "user", "content": "x", "images": ["data:image/png;base64,AA=="]}]},
            "base64",
        ),
        ({**ok, "options": {"temperature": "hot"}}, "temperature must be a number"),
        ({**ok, "options": {"top_p": 1.5}}, "between 0.0 and 1.0"),
        ({**ok, "options": {"num_ctx": 0}}, "at least 1"),
        ({**ok, "options": {"seed": 1.5}}, "whole number"),
        ({**ok, "options": {"mirostat": 1}}, "unknown option"),
        ([], "JSON object"),
    ]:
        with pytest.raises(BadInput, match=says):
            playground_input.chat_body(bad)


def test_web_search_context_and_sources() -> None:
    body = playground_input.chat_body(
        {"model": "m", "system": "Be brief.", "messages": [{"role": "user", "content": " What  is\nnew? "}]}
    )
    assert playground_input.wants_search({"web_search": True}) and not playground_input.wants_search({})
    with pytest.raises(BadInput, match="true or false"):
        playground_input.wants_search({"web_search": "yes"})
    assert playground_input.search_query(body) == "What is new?"
    answer = {
        "results": [
            {"title": " First\n hit ", "url": "https://a.example/1", "content": "alpha " * 400},
            {"title": "again", "url": "https://a.example/1", "content": "duplicate"},
            {"title": "js", "url": "javascript:alert(1)", "content": "x"},
            {"title": "relative", "url": "/local", "content": "x"},
            {"title": "", "url": "http://b.example/2", "content": None},
            "junk",
            *({"title": f"n{i}", "url": f"https://c.example/{i}", "content": ""} for i in range(9)),
        ]
    }
    found = playground_input.sources(answer)
    assert [s["url"] for s in found] == [
        "https://a.example/1",
        "http://b.example/2",
        "https://c.example/0",
        "https://c.example/1",
        "https://c.example/2",
    ]
    assert found[0]["title"] == "First hit" and len(found[0]["content"]) == playground_input.MAX_SNIPPET_CHARS
    assert found[1] == {"url": "http://b.example/2", "title": "http://b.example/2", "content": ""}
    assert playground_input.sources({"results": "nope"}) == [] == playground_input.sources(None)
    playground_input.with_sources(body, found[:2])
    roles = [m["role"] for m in body["messages"]]  # type: ignore[union-attr]
    assert roles == ["system", "system", "user"]  # the results come right before the question
    context = body["messages"][1]["content"]  # type: ignore[index]
    assert "[1] First hit\nURL: https://a.example/1\nalpha" in context
    assert "[2] http://b.example/2\nURL: http://b.example/2" in context
    empty = playground_input.chat_body({"model": "m", "messages": [{"role": "user", "content": "q"}]})
    playground_input.with_sources(empty, [])
    assert "found nothing" in empty["messages"][0]["content"]  # type: ignore[index]
    with pytest.raises(BadInput, match="needs a question"):
        playground_input.search_query(
            playground_input.chat_body({"model": "m", "messages": [{"role": "user", "content": " "}]})
        )


def test_embed_texts_groups_sets_and_typed_lines() -> None:
    texts = playground_input.embed_texts(["animals", "vehicles"], "# planets\nMars\n\nVenus\ncat\n#\nhello")
    assert texts.sets == ["animals", "vehicles", "planets", "your texts"]
    assert texts.texts[-3:] == ["Mars", "Venus", "hello"]  # "cat" is already an animal: one point per text
    assert texts.groups[-3:] == [2, 2, 3]
    assert len(texts.texts) == len(SETS["animals"]) + len(SETS["vehicles"]) + 3
    with pytest.raises(BadInput, match="no built-in set"):
        playground_input.embed_texts(["planets"], "")
    with pytest.raises(BadInput, match="choose a built-in set or type"):
        playground_input.embed_texts([], "\n  \n")
    with pytest.raises(BadInput, match="at most 300"):
        playground_input.embed_texts([], "\n".join(f"t{i}" for i in range(301)))


def test_builtin_sets_have_a_few_dozen_distinct_words_each() -> None:
    assert set(DEFAULT) == {"animals", "vehicles", "emotions"} and len(SETS) >= 5
    words = [w.lower() for ws in SETS.values() for w in ws]
    assert len(words) == len(set(words))  # no word in two sets
    assert all(24 <= len(ws) <= 40 for ws in SETS.values())


def test_relay_explains_refusals_in_one_sentence() -> None:
    assert "refused the key" in relay.explain(401, '{"error":"invalid API key"}', {})
    assert "Try again in 7 s" in relay.explain(429, '{"error":"rate limit exceeded"}', {"retry-after": "7"})
    assert relay.explain(403, '{"error":"model not allowed for this key"}', {}).endswith(
        "not allowed for this key"
    )
    assert relay.explain(404, '{"error":"model \'x\' not found"}', {}) == "model 'x' not found (HTTP 404)"
    assert "smaller images" in relay.explain(413, "", {})
    assert relay.explain(502, '{"error":{"message":"upstream died"}}', {}).endswith("upstream died")
    assert relay.explain(500, "", {}) == "the proxy answered HTTP 500"


def test_relay_dials_the_proxy_where_it_listens() -> None:
    for listen, url in [
        ("0.0.0.0:8080", "http://127.0.0.1:8080"),
        ("[::]:9000", "http://[::1]:9000"),
        ("10.1.2.3:80", "http://10.1.2.3:80"),
    ]:
        assert relay.for_config(parse({"proxy": {"listen": listen}})).url == url
