"""Bodies read as Go reads them: what `jsonbody.parse` accepts means the same to Ollama's decoder.

The reference decoder (tests/security/godecode.py) follows Go's rules independently; the property test
builds bodies from the keys Fortress reads, recased and repeated every way, and checks both readings.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fortress.pipeline.jsonbody import NESTED, READ, encode, fold, parse
from fortress.pipeline.validate import Reject
from tests.security.godecode import STRUCTS, go_fold, go_view, python_view, zero


def refused(raw: bytes | str) -> str:
    result = parse(raw.encode() if isinstance(raw, str) else raw)
    assert isinstance(result, Reject) and result.status == 400, result
    return result.message


@pytest.mark.parametrize(
    "raw",
    [
        '{"model":"llama3","Model":"forbidden"}',
        '{"MODEL":"forbidden","model":"llama3"}',
        '{"model":"llama3","prompt":"hi","KEEP_ALIVE":-1}',
        '{"model":"llama3","Insecure":true}',
        '{"model":"x","From":"evil.example/ns/m"}',
        '{"model":"x","Modelfile":"FROM /etc/passwd"}',
        '{"model":"x","Files":{"../../etc/ld.so.preload":"sha256:00"}}',
        '{"source":"a","destination":"b","Destination":"evil.example/ns/m"}',
        '{"model":"llama3","\u017ftream":true}',  # long s: Go reads it as "stream"
        '{"model":"llama3","\u212aeep_alive":-1}',  # Kelvin sign: Go reads it as "keep_alive"
        '{"model":"llama3","options":{"num_ctx":1024},"Options":{"num_ctx":1000000}}',
        '{"model":"llama3","options":{"num_ctx":1024,"NUM_CTX":1000000}}',
        '{"model":"llama3","options":{"Num_Predict":-1}}',
        '{"model":"llama3","prompt":"a","Prompt":"b"}',  # not read by Fortress, but ambiguous
    ],
)
def test_recased_keys_are_refused(raw: str) -> None:
    message = refused(raw)
    assert "case" in message or "write it as" in message


@pytest.mark.parametrize(
    "raw",
    [
        '{"model":"llama3","model":"forbidden"}',
        '{"model":"evil.example/x","model":null,"name":"llama3"}',  # Go ignores the null: evil stays
        '{"model":"llama3","options":{"num_ctx":1000000},"options":{"temperature":1}}',  # Go merges
        '{"stream":false, "stream" :true,"model":"llama3"}',
    ],
)
def test_repeated_top_level_keys_are_refused(raw: str) -> None:
    assert "twice" in refused(raw)


def test_repeats_inside_maps_and_unread_objects_read_alike() -> None:
    """In a Go map (options, files) the last repeat wins, as in Python; deeper, Fortress reads nothing."""
    raw = (
        b'{"model":"x","options":{"num_ctx":9,"num_ctx":2},"files":{"a":"1","a":"2"},'
        b'"messages":[{"a":1,"a":2}]}'
    )
    body = parse(raw)
    assert body == {"model": "x", "options": {"num_ctx": 2}, "files": {"a": "2"}, "messages": [{"a": 2}]}
    go = go_view("/api/create", raw)
    assert go["files"] == {"a": "2"}
    assert go_view("/api/generate", raw)["options"] == {"num_ctx": 2}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"  ",
        b"{",
        b"[1]",
        b'"model"',
        b"\xef\xbb\xbf{}",  # a BOM: Go refuses it too
        b'{"model":"\xff"}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"model":"x"} {"model":"y"}',
    ],
)
def test_malformed_bodies_are_refused_without_raising(raw: bytes) -> None:
    refused(raw)


def test_ordinary_bodies_pass_unchanged() -> None:
    body = {
        "model": "llama3",
        "messages": [{"role": "user", "content": "hi", "images": ["aGk="]}],
        "options": {"num_ctx": 2048, "temperature": 0.5, "Mirostat": 1},  # unread option keys: any case
        "format": {"type": "object", "properties": {"Name": {}, "name": {}}},  # a schema may have both
        "Prompt": "an unread field in another case",
        "stream": False,
    }
    assert parse(json.dumps(body).encode()) == body


def test_fold_is_at_least_as_coarse_as_gos() -> None:
    """Any two runes Go takes for the same letter fold alike (over every code point that has a case)."""
    cased = [
        chr(cp) for cp in range(sys.maxunicode + 1) if chr(cp).casefold() != chr(cp) or chr(cp).isupper()
    ]
    groups: dict[str, set[str]] = defaultdict(set)
    for ch in cased:
        groups[go_fold(ch)].add(fold(ch))
        groups[go_fold(ch)].add(fold(go_fold(ch)))  # the orbit's own folded rune belongs to it too
    assert len(cased) > 2000
    assert not {k: v for k, v in groups.items() if len(v) > 1}
    for name in READ:
        assert fold(name) == name  # the read fields are plain lower-case ASCII


# ---- the property ---------------------------------------------------------------------------------

_SPECIAL = {"k": ["K", "\u212a"], "s": ["S", "\u017f"], "i": ["I", "\u0131", "\u0130"]}


@st.composite
def recased(draw: st.DrawFn, name: str) -> str:
    """`name` with each letter in either case, or a rune Go folds onto it."""
    out = []
    for ch in name:
        options = [ch, ch.upper(), *_SPECIAL.get(ch, [])]
        out.append(draw(st.sampled_from(options)))
    return "".join(out)


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.sampled_from(["llama3", "forbidden", "evil.example/ns/m", "-1", "5m", "../../x"]),
    st.dictionaries(
        st.sampled_from(["num_ctx", "NUM_CTX", "num_predict", "temperature"]), st.integers(-1, 10**6)
    ),
)
_NAMES = sorted(READ | {"prompt", "messages", "input", "temperature"})


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """An object of 1-6 members written by hand, so keys may repeat; nested `options` likewise."""
    members = []
    for _ in range(draw(st.integers(1, 6))):
        key = draw(recased(draw(st.sampled_from(_NAMES))))
        if fold(key) == "options" and draw(st.booleans()):
            inner = [
                (draw(recased(draw(st.sampled_from(["num_ctx", "num_predict", "seed"])))), draw(_VALUES))
                for _ in range(draw(st.integers(0, 3)))
            ]
            value = "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in inner) + "}"
        else:
            value = json.dumps(draw(_VALUES))
        members.append(f"{json.dumps(key, ensure_ascii=draw(st.booleans()))}:{value}")
    return ("{" + ",".join(members) + "}").encode()


@given(bodies())
@settings(max_examples=600, deadline=None)
def test_what_parse_accepts_reads_the_same_in_go(raw: bytes) -> None:
    body = parse(raw)
    if isinstance(body, Reject):
        assert body.status == 400
        return
    for path in STRUCTS:
        go, py = go_view(path, raw), python_view(path, raw)
        for name in (go.keys() | py.keys()) & READ:  # fields Fortress does not read may differ
            if name in NESTED and isinstance(py[name], dict):
                for inner in NESTED[name]:
                    assert zero((go[name] or {}).get(inner)) == zero(py[name].get(inner)), (path, name)
            else:
                assert zero(go.get(name)) == zero(py.get(name)), (path, name)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"model":"x"} junk', "invalid JSON in request body: extra data at character 13"),
        ('{"model": }', "invalid JSON in request body: Expecting value: line 1 column 11 (char 10)"),
        (
            '{"model":"x",}',
            "invalid JSON in request body: Expecting property name enclosed in double quotes",
        ),
        ('{"model":"x"', "invalid JSON in request body: Expecting ',' delimiter: line 1 column 13 (char 12)"),
    ],
)
def test_a_flat_body_is_refused_in_the_walks_words(raw: str, message: str) -> None:
    """Bodies with no nested object are parsed in one C call; when that fails, the walk words the refusal."""
    assert refused(raw).startswith(message)


def test_a_flat_body_reads_as_the_walk_reads_it() -> None:
    assert parse(b' {"model":"llama3","stream":false,"images":["a"],"keep_alive":-1} ') == {
        "model": "llama3",
        "stream": False,
        "images": ["a"],
        "keep_alive": -1,
    }


def test_the_well_known_names_skipped_by_the_key_check_are_their_own_fold() -> None:
    """An object of well-known names is not folded key by key: sound only for names that fold to
    themselves (lower-case ASCII), and it answers as the full check does."""
    from fortress.pipeline.jsonbody import _PLAIN, check_keys

    for name in _PLAIN:
        assert name.isascii() and fold(name) == name == go_fold(name), name
    plain = dict.fromkeys(sorted(_PLAIN), 1)
    assert check_keys(plain, READ) is None
    assert parse(json.dumps({**plain, "options": plain}).encode()) == {**plain, "options": plain}
    assert "case" in refused(json.dumps({**plain, "Prompt": 2}))
    assert "write it as" in refused(json.dumps({**plain, "options": {"top_k": 1, "NUM_CTX": 2}}))


_LEAVES = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
_JSON = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)


@given(
    body=st.dictionaries(st.text(max_size=6), _JSON, max_size=5),
    spacing=st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")]),
    edits=st.lists(
        st.tuples(st.integers(0, 400), st.sampled_from(["", " ", "\n", ",", "}", '"', ":", "x"])), max_size=3
    ),
)
@settings(max_examples=600, deadline=None)
def test_the_walk_of_a_nested_body_reads_as_the_standard_librarys(
    body: dict, spacing: tuple[str, str], edits: list[tuple[int, str]]
) -> None:
    """_top_pairs answers exactly what json.decoder.JSONObject answers, or None (then JSONObject words the
    refusal); clean JSON it always reads itself."""
    from json.decoder import JSONObject

    from fortress.pipeline.jsonbody import _SCAN, _top_pairs

    text = json.dumps(body, separators=spacing, ensure_ascii=False)
    for at, piece in edits:  # a character inserted, or one removed (piece "")
        at = min(at, len(text))
        text = text[:at] + piece + text[at + (not piece) :]
    if text[:1] != "{":
        return  # parse() walks only what starts an object
    try:
        expected = JSONObject((text, 1), True, _SCAN, None, list, {})
    except (ValueError, RecursionError):
        expected = None
    found = _top_pairs(text, 0)
    assert found == expected or found is None
    if not edits:
        assert found is not None and dict(found[0]) == body


@given(
    body=st.dictionaries(st.sampled_from(["model", "Model", "options", "messages", "x"]), _JSON, max_size=5),
    options=st.dictionaries(st.sampled_from(["num_ctx", "NUM_CTX", "seed"]), _LEAVES, max_size=3),
    edits=st.lists(
        st.tuples(st.integers(0, 200), st.sampled_from(["", " ", ",", "}", "{", '"', ":", "x"])), max_size=2
    ),
)
@settings(max_examples=600, deadline=None)
def test_a_small_nested_body_reads_as_the_walk_reads_it(
    body: dict, options: dict, edits: list[tuple[int, str]]
) -> None:
    """A small body with nested objects is read by the C scanner twice instead of walked: the same body or
    the same refusal, word for word, as the walk (which bigger bodies take)."""
    from fortress.pipeline import jsonbody

    text = json.dumps({**body, "options": options} if "options" in body else body)
    for at, piece in edits:
        at = min(at, len(text))
        text = text[:at] + piece + text[at + (not piece) :]
    raw = text.encode()
    scanned = parse(raw)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jsonbody, "_SCAN_TWICE", -1)  # every nested body is walked
        walked = parse(raw)
    assert scanned == walked


@given(
    body=st.dictionaries(
        st.text(max_size=6),
        _JSON
        | st.floats()
        | st.sampled_from(["\ud800", "\udfff x", "ü\u2028é"]),  # lone surrogates: JSON allows them
        max_size=5,
    )
)
@settings(max_examples=400, deadline=None)
def test_a_rewritten_body_is_written_as_json_dumps_writes_it(body: dict) -> None:
    """The stages' rewrite (model "auto", clamps) uses a C encoder built once: byte for byte json.dumps's
    output, lone surrogates, NaN and non-ASCII text included."""
    assert encode(body) == json.dumps(body).encode()
