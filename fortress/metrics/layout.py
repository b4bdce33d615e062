"""Where each figure lives in a worker's slot of the shared metrics table, and the fixed label sets.

A slot is an array of 64-bit words that one process writes and any process reads: integers, and doubles
for the few sums and clock readings named in `*_FLOATS`. It holds a header, then three label tables
(routes, models, backends) whose rows are found by name: the name lives in the slot's name area (one
byte of length, then UTF-8), so every process can merge rows by name whatever order they were created in.

How a word is summed over workers is part of the layout:
- counters (hot-path counts, usage rows, CPU): every slot ever claimed, live or dead, so a total never
  goes down when a worker exits; a dead slot is folded into the retired slot 0 before its reuse;
- per-worker gauges (in flight, pending rows, memory, backend outstanding and pool): live slots only;
- global gauges (backend up and breaker state, snapshot version and age): the freshest live slot.

Labels are bounded: statuses come from `STATUSES` (others fall into their class, `4xx`...), routes from
the route table (at most `ROUTES` names), models at most `MODELS` per worker, then `other`.
"""

from __future__ import annotations

# -- label sets --------------------------------------------------------------------------------------------
STATUSES = (200, 201, 204, 304, 400, 401, 403, 404, 405, 408, 413, 429, 431, 499, 500, 502, 503, 504)
STATUS_LABELS = (*(str(s) for s in STATUSES), "1xx", "2xx", "3xx", "4xx", "5xx", "other")
NSTATUS = len(STATUS_LABELS)


def _status_index() -> bytes:
    table = bytearray(1000)
    for code in range(1000):
        if code in STATUSES:
            table[code] = STATUSES.index(code)
        elif 100 <= code < 600:
            table[code] = len(STATUSES) + code // 100 - 1
        else:
            table[code] = NSTATUS - 1
    return bytes(table)


STATUS_INDEX = _status_index()  # status code -> column; bytes, so the lookup is one C index
OTHER_STATUS = NSTATUS - 1

# seconds; LLM answers take from milliseconds (lists) to minutes (long generations, model loads)
BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
NB = len(BOUNDS) + 1  # one more bucket for +Inf

REFUSALS = ("rate", "tokens", "concurrency")  # why the limits stage answered 429 (the Gate's names)
BREAKER_STATES = ("closed", "half_open", "open")
OTHER = "other"  # the row every name beyond a table's capacity is counted in
UNKNOWN_MODEL = "unknown"  # tokens without a model name

# -- slot header (word indexes) -------------------------------------------------------------------------
H_PID = 0
H_CLAIMED_AT = 1  # double, unix time
H_SEQ = 2  # publish sequence: odd while `publish` writes (a seqlock for the published words below)
H_INFLIGHT = 3
H_REFUSED = 4  # len(REFUSALS) words
H_USAGE_WRITTEN = 8
H_USAGE_DROPPED = 9
H_USAGE_PENDING = 10
H_USAGE_RESTARTS = 11
H_CPU = 12  # double, seconds
H_RSS = 13
H_PUBLISHED_AT = 14  # double, unix time
H_SNAPSHOT_VERSION = 15
H_SNAPSHOT_LOADED_AT = 16  # double, unix time
H_BACKENDS = 17  # rows of the backend table in use
HEADER_WORDS = 32

HEADER_COUNTERS = (
    *range(H_REFUSED, H_REFUSED + len(REFUSALS)),
    H_USAGE_WRITTEN,
    H_USAGE_DROPPED,
    H_USAGE_RESTARTS,
    H_CPU,
)
HEADER_FLOATS = frozenset((H_CLAIMED_AT, H_CPU, H_PUBLISHED_AT, H_SNAPSHOT_LOADED_AT))

# -- route rows: one per route name --------------------------------------------------------------------
# cells[status][bucket] counts each request once: requests_total sums a status's buckets, the duration
# histogram sums a bucket's statuses, so a request costs one write for both families.
R_CELLS = 0
R_DURATION_SUM = NSTATUS * NB  # double
R_TTFB = R_DURATION_SUM + 1  # NB buckets
R_TTFB_SUM = R_TTFB + NB  # double
R_BYTES_IN = R_TTFB_SUM + 1
R_BYTES_OUT = R_BYTES_IN + 1
ROUTE_STRIDE = R_BYTES_OUT + 1
ROUTE_FLOATS = frozenset((R_DURATION_SUM, R_TTFB_SUM))

# -- model rows -----------------------------------------------------------------------------------------
M_PROMPT = 0
M_COMPLETION = 1
MODEL_STRIDE = 2

# -- backend rows (published, rewritten as a whole under the seqlock) ---------------------------------------
B_UP = 0
B_BREAKER = 1  # index in BREAKER_STATES
B_OUTSTANDING = 2
B_POOL_IDLE = 3
B_POOL_ACTIVE = 4
BACKEND_STRIDE = 5

# -- capacities and offsets -----------------------------------------------------------------------------
ROUTES = 64
MODELS = 256
BACKENDS = 64
NAME_BYTES = 128  # one length byte, then up to 127 bytes of UTF-8

ROUTES_AT = HEADER_WORDS
MODELS_AT = ROUTES_AT + ROUTES * ROUTE_STRIDE
BACKENDS_AT = MODELS_AT + MODELS * MODEL_STRIDE
WORDS = BACKENDS_AT + BACKENDS * BACKEND_STRIDE

# name areas, in bytes from the slot's start
ROUTE_NAMES_AT = WORDS * 8
MODEL_NAMES_AT = ROUTE_NAMES_AT + ROUTES * NAME_BYTES
BACKEND_NAMES_AT = MODEL_NAMES_AT + MODELS * NAME_BYTES
SLOT_BYTES = -(-(BACKEND_NAMES_AT + BACKENDS * NAME_BYTES) // 4096) * 4096  # whole pages
