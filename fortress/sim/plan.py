"""How many tokens a completion yields and what its metrics say: shared by native and OpenAI routes."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fortress.sim import text
from fortress.sim.settings import Knobs

COLD_LOAD_NS = 48_000_000  # reported load_duration when the model was not loaded yet
WARM_LOAD_NS = 90_000
PROMPT_TOKEN_NS = 150_000


@dataclass(frozen=True, slots=True)
class Plan:
    """Token count, stop reason and prompt size of one completion."""

    count: int
    done_reason: str
    prompt_tokens: int
    load_ns: int
    chunk_size: int
    interval_s: float
    rate: float

    @classmethod
    def make(cls, knobs: Knobs, num_predict: object, prompt_tokens: int, was_loaded: bool) -> Plan:
        """Ollama cuts at options.num_predict (done_reason "length"); otherwise the knob's count."""
        count, reason = knobs.tokens, "stop"
        numeric = isinstance(num_predict, int | float) and not isinstance(num_predict, bool)
        if numeric and 0 < num_predict <= count:
            count, reason = int(num_predict), "length"
        return cls(
            count=count,
            done_reason=reason,
            prompt_tokens=prompt_tokens,
            load_ns=WARM_LOAD_NS if was_loaded else COLD_LOAD_NS,
            chunk_size=knobs.chunk_size,
            interval_s=knobs.interval_s,
            rate=knobs.rate,
        )

    @property
    def generation_s(self) -> float:
        """Wall time a non-stream reply waits, so `--rate` also paces stream:false."""
        return self.count / self.rate if self.rate > 0 else 0.0

    def pieces(self) -> tuple[bytes, ...]:
        return text.pieces(self.count, self.chunk_size)

    def metrics(self, started: float) -> dict:
        """The final object's durations (ns), from the real elapsed time since `started`."""
        prompt_ns = self.prompt_tokens * PROMPT_TOKEN_NS
        eval_ns = max(int((time.perf_counter() - started) * 1e9), self.count * 1000, 1)
        return {
            "total_duration": self.load_ns + prompt_ns + eval_ns,
            "load_duration": self.load_ns,
            "prompt_eval_count": self.prompt_tokens,
            "prompt_eval_duration": prompt_ns,
            "eval_count": self.count,
            "eval_duration": eval_ns,
        }

    def usage(self) -> dict:
        """OpenAI's usage object for the same completion."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.count,
            "total_tokens": self.prompt_tokens + self.count,
        }
