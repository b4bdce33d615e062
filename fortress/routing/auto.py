"""Model "auto": which installed model serves a request, from what the request needs and what models can do.

Pure and synchronous, three steps:
- `needs_of(route, body)`: images -> vision, non-empty `tools` -> tools, `think` (or OpenAI's
  `reasoning_effort`) -> thinking, `suffix` -> insert, embedding routes -> embedding, else completion;
  `options.num_ctx` asks for at least that context length.
- `candidates(inventory, store, healthy)`: one `Candidate` per model name with learnt capabilities.
- `choose(needs, candidates, ...)`: among the models the key may use (its allow-list is never escaped)
  that match `[routing] auto_models` and the key's own `auto_models` (both globs in order; empty = all),
  the ones that fit the needs, ranked: held by a healthy backend, the key's order, the configured order,
  already loaded somewhere, smallest on disk, name. Nothing fits -> a `Refusal` (400) naming what is
  missing (503 while no model's capabilities are known at all). Models whose capabilities are not
  learnt yet are never chosen.

`CandidateCache` keeps the candidate list between inventory, capability and health changes, and
`AutoChooser` (the body stage's step, `pipeline/chain.py`) remembers each choice per key and needs until
that list or the configuration changes: a request for "auto" costs a dict lookup, not a pass over the
models with their globs. A model literally named "auto" is shadowed.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fortress.http.replies import LocalReply, error_reply
from fortress.routing.capabilities import CapabilityStore
from fortress.routing.inventory import Inventory, model_key

if TYPE_CHECKING:
    from fortress.pipeline.routes import Route
    from fortress.state.snapshot import KeyRecord

AUTO_KEY = model_key("auto")
EMBED_ROUTES = frozenset({"/api/embed", "/api/embeddings", "/v1/embeddings", "/embeddings"})
AUTO_ROUTES = EMBED_ROUTES | {
    "/api/chat",
    "/api/generate",
    "/v1/chat/completions",
    "/v1/completions",
    "/chat/completions",
    "/completions",
}
THINK_LEVELS = frozenset({"low", "medium", "high", "max"})
IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
_THINKING = frozenset({"think", "reasoning_effort", "reasoning"})  # the fields _wants_thinking reads
HEADER = b"X-Fortress-Model"
_HEADER_SAFE = "/:@+-._~!$&'()*,;="  # visible ASCII a model name may hold; the rest is %-encoded
_UNKNOWN_SIZE = float("inf")  # a provider's model: after every model whose size is known


def is_auto(model: Any) -> bool:
    """Whether the request's model asks for the choice ("auto", any case, ":latest" allowed)."""
    if model == "auto":
        return True
    return isinstance(model, str) and "auto" in model.lower() and model_key(model) == AUTO_KEY


@dataclass(frozen=True, slots=True)
class Needs:
    capabilities: frozenset[str]
    min_context: int | None = None  # options.num_ctx: the model's context length must reach it


def _nonempty_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0


def _has_images(body: dict[str, Any]) -> bool:
    if _nonempty_list(body.get("images")):
        return True
    messages = body.get("messages")
    if not isinstance(messages, list):
        return False
    for message in messages:
        if not isinstance(message, dict):
            continue
        if _nonempty_list(message.get("images")):
            return True
        content = message.get("content")
        if isinstance(content, list) and any(
            isinstance(part, dict) and part.get("type") in IMAGE_PARTS for part in content
        ):
            return True
    return False


def _wants_thinking(body: dict[str, Any]) -> bool:
    if _THINKING.isdisjoint(body):  # one C test: most bodies have none of these fields
        return False
    think = body.get("think")
    if think is True or (isinstance(think, str) and think.lower() in THINK_LEVELS):
        return True
    effort = body.get("reasoning_effort")
    reasoning = body.get("reasoning")
    if effort is None and isinstance(reasoning, dict):
        effort = reasoning.get("effort")
    return isinstance(effort, str) and effort.lower() not in ("", "none")


def needs_of(route: str, body: dict[str, Any]) -> Needs:
    """What a request for `route` (the route's name, e.g. "/api/chat") with this parsed body needs."""
    options = body.get("options")
    num_ctx = options.get("num_ctx") if isinstance(options, dict) else None
    min_context = (
        num_ctx if isinstance(num_ctx, int) and not isinstance(num_ctx, bool) and num_ctx > 0 else None
    )
    if route in EMBED_ROUTES:
        return _needs(min_context, True, False, False, False, False)
    suffix = body.get("suffix")
    return _needs(
        min_context,
        False,
        _has_images(body),
        _nonempty_list(body.get("tools")),
        _wants_thinking(body),
        isinstance(suffix, str) and bool(suffix),
    )


@functools.lru_cache(maxsize=256)
def _needs(
    min_context: int | None, embedding: bool, vision: bool, tools: bool, thinking: bool, insert: bool
) -> Needs:
    """One Needs per combination, made once (requests repeat a handful of them)."""
    if embedding:
        return Needs(frozenset({"embedding"}), min_context)
    flags = (("vision", vision), ("tools", tools), ("thinking", thinking), ("insert", insert))
    return Needs(frozenset({"completion", *(name for name, on in flags if on)}), min_context)


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str  # the public name, as /api/tags or /v1/models list it ("<provider>/<model>" for providers)
    capabilities: frozenset[str]
    context_length: int | None = None  # None: unknown (providers), never a reason to refuse
    size: int | None = None  # bytes on disk (/api/tags); None sorts after every known size
    loaded: bool = False  # in memory on some backend (/api/ps, or just sent there)
    available: bool = True  # held by at least one healthy backend

    def fits(self, needs: Needs) -> bool:
        if not self.capabilities.issuperset(needs.capabilities):
            return False
        return (
            needs.min_context is None
            or self.context_length is None
            or self.context_length >= needs.min_context
        )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def candidates(
    inventory: Inventory, store: CapabilityStore, healthy: Collection[str]
) -> tuple[Candidate, ...]:
    """One Candidate per model whose capabilities are known on at least one holder.

    A model installed on several backends under different digests gets the capabilities all its
    known copies share, the smallest context length and size among them.
    """
    seen: dict[str, list[Any]] = {}  # key -> [name, caps, context, size, available]
    for entry in inventory:
        for key, model in entry.models.items():
            caps = store.for_model(inventory, entry.name, key)
            if caps is None:
                continue
            size = _int(model.get("size"))
            row = seen.get(key)
            if row is None:
                seen[key] = [model.get("name") or key, caps.names, caps.context_length, size, False]
                row = seen[key]
            else:
                row[1] = row[1] & caps.names
                row[2] = _smaller(row[2], caps.context_length)
                row[3] = _smaller(row[3], size)
            row[4] = row[4] or entry.name in healthy
    return tuple(
        Candidate(name, caps, context, size, bool(inventory.loaded_on(key)), available)
        for key, (name, caps, context, size, available) in seen.items()
    )


def _smaller(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


@functools.lru_cache(maxsize=1024)
def _patterns(globs: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(fnmatch.translate(g.strip().lower())) for g in globs if g.strip())


def glob_rank(globs: tuple[str, ...], name: str) -> int | None:
    """Index of the first glob matching `name` (case-insensitive; "m" also matches "m:latest"),
    None when none does; 0 for every name when there are no globs."""
    patterns = _patterns(globs)
    if not patterns:
        return 0
    lowered = name.lower()
    bare = lowered.removesuffix(":latest")
    for index, pattern in enumerate(patterns):
        if pattern.match(lowered) or pattern.match(bare):
            return index
    return None


@dataclass(frozen=True, slots=True)
class Refusal:
    """No model fits: the status and message to answer, and what was missing (for tests and logs)."""

    status: int
    message: str
    missing: tuple[str, ...]


def _and(names: Iterable[str]) -> str:
    ordered = sorted(names)
    return ", ".join(ordered[:-1]) + " and " + ordered[-1] if len(ordered) > 1 else ordered[0]


def _refusal(needs: Needs, eligible: list[Candidate], known: bool) -> Refusal:
    if not known:  # just started, or no backend answered /api/show yet: worth a retry
        return Refusal(
            503, 'model "auto": no model\'s capabilities are known yet; try again shortly', ("model",)
        )
    if not eligible:
        return Refusal(400, 'model "auto": no model is available for "auto" to this key', ("model",))
    missing = tuple(sorted(c for c in needs.capabilities if not any(c in m.capabilities for m in eligible)))
    if missing:
        return Refusal(400, f'model "auto": no available model supports {_and(missing)}', missing)
    capable = [m for m in eligible if m.capabilities.issuperset(needs.capabilities)]
    if not capable:
        wanted = _and(needs.capabilities)
        return Refusal(400, f'model "auto": no single available model supports {wanted} together', ())
    return Refusal(
        400,
        f'model "auto": no available model with {_and(needs.capabilities)} has a context length of at least '
        f"{needs.min_context} (options.num_ctx)",
        ("context_length",),
    )


def choose(
    needs: Needs,
    pool: Iterable[Candidate],
    *,
    preferences: tuple[str, ...] = (),
    key_preferences: tuple[str, ...] = (),
    allowed: Callable[[str], bool] | None = None,
) -> Candidate | Refusal:
    """The model for an "auto" request, or why there is none. Never returns a model `allowed` refuses."""
    eligible: list[Candidate] = []
    best: tuple[Any, ...] | None = None
    chosen: Candidate | None = None
    known = False
    for candidate in pool:
        known = True
        if allowed is not None and not allowed(candidate.name):
            continue
        key_rank = glob_rank(key_preferences, candidate.name)
        rank = glob_rank(preferences, candidate.name)
        if key_rank is None or rank is None:
            continue
        eligible.append(candidate)
        if not candidate.fits(needs):
            continue
        order = (
            not candidate.available,
            key_rank,
            rank,
            not candidate.loaded,
            _UNKNOWN_SIZE if candidate.size is None else candidate.size,
            candidate.name,
        )
        if best is None or order < best:
            best, chosen = order, candidate
    return chosen if chosen is not None else _refusal(needs, eligible, known)


class CandidateCache:
    """candidates() rebuilt only when the inventory, the capability store or the healthy set changed."""

    def __init__(self, inventory: Inventory, store: CapabilityStore) -> None:
        self.inventory = inventory
        self.store = store
        self._stamp: tuple[int, int, frozenset[str]] | None = None
        self._pool: tuple[Candidate, ...] = ()

    def pool(self, healthy: frozenset[str]) -> tuple[Candidate, ...]:
        stamp = (self.inventory.generation, self.store.generation, healthy)
        if stamp != self._stamp:
            self._pool = candidates(self.inventory, self.store, healthy)
            self._stamp = stamp
        return self._pool


def model_header(name: str) -> tuple[bytes, bytes]:
    """The `X-Fortress-Model` header naming the choice (a backend-supplied name cannot break the head)."""
    return HEADER, quote(name, safe=_HEADER_SAFE).encode("ascii")


Picked = tuple[str, tuple[bytes, bytes]]  # the model chosen and its X-Fortress-Model header
_MEMO_LIMIT = 4096  # (key, needs) pairs remembered; a full memo starts over


class AutoChooser:
    """Model "auto" in the body stage: the Gate's `auto` (pipeline/chain.py).

    `pick()` answers None for a request that does not ask for "auto" (one substring test for most),
    else the model with its header, or the refusal as an error reply in the route's shape. Choices are
    remembered per (key, needs): they depend only on the candidate pool (rebuilt by CandidateCache when
    the inventory, the capabilities or the healthy set change), the key's allow-list and `auto_models`
    and `[routing] auto_models` (all replaced together by `configure()` on a snapshot swap).
    """

    def __init__(self, cache: CandidateCache, healthy: Callable[[], frozenset[str]]) -> None:
        self.cache = cache
        self.healthy = healthy
        self.preferences: tuple[str, ...] = ()
        self._pool: tuple[Candidate, ...] | None = None
        self._memo: dict[tuple[str, Needs], Picked | Refusal] = {}

    def configure(self, preferences: tuple[str, ...]) -> None:
        """A new snapshot: `[routing] auto_models`, and keys whose allow-lists may have changed."""
        self.preferences = preferences
        self._memo.clear()

    def pick(
        self, route: Route, body: dict[str, Any], key: KeyRecord | None, allowed: Callable[[str], bool]
    ) -> Picked | LocalReply | None:
        if route.name not in AUTO_ROUTES or not is_auto(body.get("model")):
            return None
        needs = needs_of(route.name, body)
        pool = self.cache.pool(self.healthy())
        if pool is not self._pool:
            self._pool = pool
            self._memo.clear()
        memo_key = (key.id if key is not None else "", needs)
        found = self._memo.get(memo_key)
        if found is None:
            choice = choose(
                needs,
                pool,
                preferences=self.preferences,
                key_preferences=key.auto_models if key is not None else (),
                allowed=allowed,
            )
            found = choice if isinstance(choice, Refusal) else (choice.name, model_header(choice.name))
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[memo_key] = found
        if isinstance(found, Refusal):
            retry = ((b"Retry-After", b"1"),) if found.status == 503 else ()
            return error_reply(found.status, found.message, route.openai, headers=retry)
        return found
