"""A provider's chat or completions answer -> Ollama's /api/chat or /api/generate answer.

Input is whatever the provider sends: an SSE stream of `chat.completion.chunk` / `text_completion`
events, or one JSON object. Output is what the Ollama client asked for: NDJSON lines written as the
events arrive (`stream`), or one object at the end. Text becomes `message.content` (chat) or
`response` (generate), reasoning becomes `thinking`, tool-call fragments are assembled and sent as
one `tool_calls` line with parsed `arguments` objects, and the final object carries `done_reason`,
token counts from the provider's `usage`, and durations from the injected clock:
`load_duration` = request sent -> provider's head, `prompt_eval_duration` = head -> first token,
`eval_duration` = first token -> end (a non-streamed answer's time is all `eval_duration`).
"""

from __future__ import annotations

import json
import re
import sys
from json.encoder import encode_basestring

from fortress.translate.base import (
    JSON,
    NDJSON,
    Clock,
    Counted,
    Headers,
    Stamps,
    dumps,
    is_event_stream,
    loads,
)
from fortress.translate.errors import client_status, message_of, provider_message
from fortress.translate.sse import Event, SSEParser

# OpenAI finish_reason -> Ollama done_reason; Ollama says "stop" after tool calls too.
_REASONS = {"stop": "stop", "length": "length", "tool_calls": "stop", "function_call": "stop"}
INCOMPLETE = "the provider's stream ended before the answer was complete"

# A content-only chat chunk event, compact, as OpenAI, Ollama's compatibility layer and most servers
# write it: known metadata, `choices[0].delta.content` (role/refusal at most beside it), no finish
# reason, usage or error. Its text is copied as the JSON string it already is (the pattern admits
# valid JSON string contents only), without decoding and re-encoding; other events are decoded.
_TEXT_HEAD = (
    rb'data: \{(?:"(?:id|object|created|model|system_fingerprint|service_tier)":(?:"[^"\\\n]*"|-?\d+|null),)*'
    rb'"choices":\[\{"index":0,"delta":\{(?:"role":"assistant",)?"content":"'
)
_TEXT_REST = (
    rb'([^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*)"(?:,"refusal":null)?\}'
    rb'(?:,"logprobs":null)?,"finish_reason":null(?:,"stop_reason":null)?\}\]'
    rb'(?:,"(?:usage|obfuscation)":(?:null|"[^"\\\n]*"))*\}\n\n'
)
_TEXT_EVENT = re.compile(_TEXT_HEAD + _TEXT_REST)
_TEXT_AFTER_HEAD = re.compile(_TEXT_REST)  # once a stream's head is known, the rest of each event
# Within one stream every such event repeats the same head (up to the text) and tail (after it), so a
# read holding nothing else is prefix + text + tail, again and again: see GenerationCodec._run.
_MARK = 16  # bytes on each side of an event boundary that find it
_RUN_LEAST = 4  # events in a read below which going event by event costs less


def _line_parts(text_key: bytes, close: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """What a streamed line holds around its text: the key before it, the end after it, and both again
    with the text's own quotes (for text copied as the JSON string it already is)."""
    return text_key, close, text_key + b'"', b'"' + close


_CHAT_LINE = _line_parts(b'","message":{"role":"assistant","content":', b'},"done":false}\n')
_GENERATE_LINE = _line_parts(b'","response":', b',"done":false}\n')


def _quoted(text: str) -> bytes:
    return encode_basestring(text).encode()


class ToolCallError(ValueError):
    """Assembled tool-call arguments that are not a JSON object."""


class GenerationCodec(Counted):
    """One provider answer for `/api/chat` (chat=True) or `/api/generate`; see the module docstring."""

    __slots__ = (
        "_body",
        "_calls",
        "_calls_sent",
        "_chat",
        "_clock",
        "_close",
        "_content",
        "_error_status",
        "_finish",
        "_finished",
        "_first_ns",
        "_head_ns",
        "_mark",
        "_model",
        "_open",
        "_parser",
        "_prefix",
        "_read",
        "_stamps",
        "_started_ns",
        "_stream",
        "_tail",
        "_text_close",
        "_text_key",
        "_text_open",
        "_thinking",
    )

    def __init__(self, model: str, *, chat: bool, stream: bool, clock: Clock) -> None:
        """`model` is the client's name for it (`P/M`); `clock` gives nanoseconds (time.time_ns)."""
        super().__init__()
        self._model = model
        self._chat = chat
        self._stream = stream
        self._clock = clock
        self._stamps = Stamps(clock)
        self._started_ns = clock()
        self._head_ns = self._started_ns
        self._first_ns = 0
        self._open = b'{"model":' + dumps(model) + b',"created_at":"'
        parts = _CHAT_LINE if chat else _GENERATE_LINE
        self._text_key, self._close, self._text_open, self._text_close = parts
        self._read: tuple[int, bytes] | None = None  # the clock reading of the current read
        self._prefix = b"\x00"  # the head of this stream's text events, up to the text, once seen
        self._tail = b""  # and what follows their text, up to the blank line that ends them
        # see _run: a tail's end + a prefix's start, where texts are in what it splits, the least run
        # worth it
        self._mark = (b"", 0, 0, sys.maxsize)
        self._parser: SSEParser | None = None
        self._body: list[bytes] = []  # a JSON answer or an error body, until end()
        self._error_status = 0
        self._finished = False
        self._finish: str | None = None
        self._calls: dict[int, list] = {}  # index -> [id, name, [argument fragments]]
        self._calls_sent = False
        self._content: list[str] = []  # text and thinking gathered for a one-object answer
        self._thinking: list[str] = []

    # The Codec protocol
    def head(self, status: int, headers: Headers) -> tuple[int, bytes]:
        self._head_ns = self._clock()
        if status >= 400:
            self._error_status = status
            return client_status(status), JSON
        if is_event_stream(headers):
            self._parser = SSEParser()
        return 200, NDJSON if self._stream else JSON

    def feed(self, data: bytes) -> bytes:
        if self._finished:
            return b""
        if self._parser is None:
            self._body.append(data)
            return b""
        self._read = None
        out: list[bytes] = []
        pos = 0
        if self._stream and b"\r" not in data:
            if self._parser.pending:  # complete the event a previous read began
                end = data.find(b"\n\n")
                if end >= 0:
                    pos = end + 2
                    self._decode(self._parser.feed(data[:pos]), out)
            if not self._parser.pending:
                pos = self._copy(data, pos, out)
        if pos < len(data) and not self._finished:
            self._decode(self._parser.feed(data[pos:] if pos else data), out)
        return b"".join(out)

    def _run(self, events: bytes, out: list[bytes]) -> bool:
        """Complete events that are all this stream's text events (prefix + text + tail each), turned into
        Ollama's lines without a pass per event; False (nothing done) for anything else, which then
        goes event by event (_copy).

        The texts are cut out at a short mark around each event boundary (the end of a tail and the
        start of the next prefix: cheap to search) and checked exactly: joined with tail + prefix, in
        the first prefix and the last tail, they must give back the events. They are copied as the
        JSON strings they are, so they must be plain string contents: none empty, none with a raw
        newline or NUL, a quote that is not escaped, an escaped backslash (so every backslash starts
        an escape) or a backslash at its end.
        """
        prefix, tail = self._prefix, self._tail
        if not (events.startswith(prefix) and events.endswith(tail)):
            return False
        mark, start, stop, _ = self._mark
        pieces = events.split(mark)  # [prefix + text + tail start, prefix end + text + tail start, ...]
        texts = [piece[start:stop] for piece in pieces]
        texts[0] = pieces[0][len(prefix) : stop]
        texts[-1] = pieces[-1][start : -len(tail)]
        rebuilt = (tail + prefix).join(texts)
        if len(prefix) + len(rebuilt) + len(tail) != len(events) or not events.startswith(
            rebuilt, len(prefix)
        ):
            return False
        joined = b"\x00".join(texts)
        if (
            b"\n" in joined
            or joined.count(b'"') != joined.count(b'\\"')
            or b"\\\\" in joined
            or b"\\\x00" in joined
            or joined.endswith(b"\\")
            or b"" in texts
            or joined.count(b"\x00") != len(texts) - 1
        ):
            return False
        stamp = self._now()[1]
        between = b"".join((self._text_close, self._open, stamp, self._text_open))
        out += (self._open, stamp, self._text_open, between.join(texts), self._text_close)
        return True

    def _copy(self, data: bytes, pos: int, out: list[bytes]) -> int:
        """Complete events from `pos` on: text chunks copied (a run of them at once when it is long
        enough, see _run), others decoded; where the rest begins."""
        parser = self._parser
        assert parser is not None
        stamp = None
        prefix = self._prefix
        size = len(data)
        run = True  # a run of text events is looked for once per read, where the first one starts
        while pos < size and not self._finished:
            if data.startswith(prefix, pos):  # the head every text event of this stream repeats
                if run:
                    run = False
                    last = data.rfind(self._tail, pos) + len(self._tail)  # the last such event's end
                    if last - pos >= self._mark[3] and self._run(data[pos:last], out):
                        pos = last
                        continue
                match = _TEXT_AFTER_HEAD.match(data, pos + len(prefix))
            else:
                match = _TEXT_EVENT.match(data, pos)
                if match is not None and match.end(1) > match.start(1):
                    prefix = self._prefix = data[pos : match.start(1)]
                    tail = self._tail = data[match.end(1) : match.end()]
                    cut = min(_MARK, len(prefix) - 1, len(tail) - 1)
                    least = _RUN_LEAST * (len(prefix) + len(tail))
                    self._mark = (tail[-cut:] + prefix[:cut], len(prefix) - cut, cut - len(tail), least)
            if match is None:
                end = data.find(b"\n\n", pos)
                if end < 0:
                    break
                self._decode(parser.feed(data[pos : end + 2]), out)
                pos = end + 2
                continue
            if match.end(1) > match.start(1):  # the role-only first chunk has no text
                if stamp is None:
                    stamp = self._now()[1]
                out += (self._open, stamp, self._text_open, match[1], self._text_close)
            pos = match.end()
        return pos

    def _decode(self, events: list[Event], out: list[bytes]) -> None:
        for _, payload, _ in events:
            if payload is not None:  # keep-alive comments have nothing to say to an Ollama client
                out.append(self._event(payload))

    def end(self) -> bytes:
        if self._finished:
            return b""
        self._read = None
        if self._error_status:
            self._finished = True
            return dumps({"error": provider_message(self._error_status, b"".join(self._body))})
        if self._parser is not None:
            closing: list[bytes] = []
            self._decode(self._parser.close(), closing)
            out = b"".join(closing)
            if self._finished:
                return out
            if self._finish is None:
                return out + self._fail(INCOMPLETE)
            return out + self._final()
        try:
            answer = loads(b"".join(self._body))
        except ValueError:
            return self._fail("the provider's answer is not JSON")
        if not isinstance(answer, dict) or not ("choices" in answer or "error" in answer):
            return self._fail(message_of(answer) or "the provider's answer has no choices")
        out = self._ingest(answer)
        return out if self._finished else out + self._final()

    def cut(self, message: str) -> bytes:
        if self._finished:
            return b""
        if self._error_status:
            message = provider_message(self._error_status, b"".join(self._body))
        return self._fail(message)

    # Reading the provider's answer
    def _event(self, payload: bytes) -> bytes:
        if self._finished:
            return b""
        if payload == b"[DONE]":
            return self._final()
        try:
            chunk = loads(payload)
        except ValueError:
            return self._fail("the provider sent an event that is not JSON")
        if not isinstance(chunk, dict):
            return self._fail("the provider sent an event that is not a JSON object")
        return self._ingest(chunk)

    def _ingest(self, chunk: dict) -> bytes:
        """One chunk (or a whole answer): bytes for the client when streaming, else gathered."""
        error = chunk.get("error")
        if error:
            return self._fail(message_of(error) or "the provider reported an error")
        usage = chunk.get("usage")
        if usage:
            self._count(usage)
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list):
            return b""
        choice = choices[0]  # Fortress never asks for n > 1
        if not isinstance(choice, dict):
            return b""
        delta = choice.get("delta")
        if delta is None:
            delta = choice.get("message")
        thinking = calls = None
        if isinstance(delta, dict):
            text = delta.get("content") or delta.get("refusal")
            thinking = delta.get("reasoning") or delta.get("reasoning_content")
            calls = delta.get("tool_calls")
        else:
            text = choice.get("text")
        out = b""
        if text or thinking:
            if self._stream:
                out = self._line(text if isinstance(text, str) else "", thinking)
            else:
                self._now()
                if isinstance(text, str):
                    self._content.append(text)
                if isinstance(thinking, str):
                    self._thinking.append(thinking)
        if calls and isinstance(calls, list):
            self._now()
            self._collect(calls)
        reason = choice.get("finish_reason")
        if reason:
            self._finish = reason
            if self._calls and self._stream and not self._calls_sent:
                out += self._calls_line()
        return out

    def _collect(self, calls: list) -> None:
        """OpenAI streams a call's id and name first, then its arguments in fragments, by index."""
        for call in calls:
            if not isinstance(call, dict):
                continue
            index = call.get("index")
            if not isinstance(index, int):
                index = len(self._calls)  # providers that omit the index send whole calls
            function = call.get("function") or {}
            entry = self._calls.get(index)
            if entry is None:
                entry = self._calls[index] = ["", "", []]
            if call.get("id") and not entry[0]:
                entry[0] = call["id"]
            if function.get("name") and not entry[1]:
                entry[1] = function["name"]
            arguments = function.get("arguments")
            if arguments:
                entry[2].append(arguments if isinstance(arguments, str) else json.dumps(arguments))

    def _assembled(self) -> list[dict]:
        """Ollama's tool calls: `{"id", "function": {"index", "name", "arguments": {...}}}`."""
        assembled = []
        for position, index in enumerate(sorted(self._calls)):
            call_id, name, fragments = self._calls[index]
            text = "".join(fragments).strip()
            try:
                arguments = json.loads(text) if text else {}
            except ValueError:
                arguments = None
            if not isinstance(arguments, dict):
                raise ToolCallError(
                    f"the provider sent arguments for tool {name!r} that are not a JSON object"
                )
            function = {"index": position, "name": name, "arguments": arguments}
            assembled.append({"id": call_id, "function": function} if call_id else {"function": function})
        return assembled

    # Writing Ollama's answer
    def _now(self) -> tuple[int, bytes]:
        """One clock reading per read of the provider's body: what arrived together is stamped alike.

        The first reading that produces output also marks the first token (for the durations).
        """
        now = self._read
        if now is None:
            now = self._read = self._stamps.now()
            if not self._first_ns:
                self._first_ns = now[0]
        return now

    def _line(self, text: str, thinking: object) -> bytes:
        stamp = self._now()[1]
        if thinking and isinstance(thinking, str):
            parts = (self._open, stamp, self._text_key, _quoted(text), b',"thinking":', _quoted(thinking))
            return b"".join((*parts, self._close))
        return b"".join((self._open, stamp, self._text_key, _quoted(text), self._close))

    def _calls_line(self) -> bytes:
        self._calls_sent = True
        try:
            calls = self._assembled()
        except ToolCallError as error:
            return self._fail(str(error))
        stamp = self._now()[1]
        message = {"role": "assistant", "content": "", "tool_calls": calls}
        return (
            dumps({"model": self._model, "created_at": stamp.decode(), "message": message, "done": False})
            + b"\n"
        )

    def _final(self) -> bytes:
        """The done:true object (streaming: after any tool calls not sent yet)."""
        out = b""
        if self._stream and self._calls and not self._calls_sent:
            out = self._calls_line()
            if self._finished:
                return out
        self._finished = True
        end_ns, stamp = self._stamps.now()
        answer: dict = {"model": self._model, "created_at": stamp.decode()}
        content = "" if self._stream else "".join(self._content)
        thinking = "" if self._stream else "".join(self._thinking)
        if self._chat:
            message: dict = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            if self._calls and not self._stream:
                try:
                    message["tool_calls"] = self._assembled()
                except ToolCallError as error:
                    return self._fail(str(error))
            answer["message"] = message
        else:
            answer["response"] = content
            if thinking:
                answer["thinking"] = thinking
        answer["done"] = True
        answer["done_reason"] = _REASONS.get(self._finish or "stop", self._finish)
        answer.update(self._metrics(end_ns))
        return out + dumps(answer) + (b"\n" if self._stream else b"")

    def _metrics(self, end_ns: int) -> dict:
        total = max(end_ns - self._started_ns, 0)
        if self._parser is not None:
            first = self._first_ns or end_ns
            load = max(self._head_ns - self._started_ns, 0)
            prompt = max(first - self._head_ns, 0)
            generation = max(end_ns - first, 0)
        else:
            load, prompt, generation = 0, 0, total
        metrics: dict = {"total_duration": total, "load_duration": load}
        if self.prompt_tokens is not None:
            metrics["prompt_eval_count"] = self.prompt_tokens
        metrics["prompt_eval_duration"] = prompt
        if self.completion_tokens is not None:
            metrics["eval_count"] = self.completion_tokens
        metrics["eval_duration"] = generation
        return metrics

    def _fail(self, message: str) -> bytes:
        """Ollama's way to end a stream that cannot go on: one {"error"} line, no done:true."""
        self._finished = True
        return dumps({"error": message}) + (b"\n" if self._stream else b"")
