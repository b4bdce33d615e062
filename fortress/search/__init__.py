"""Web search and page fetch for POST /api/web_search and /api/web_fetch (Ollama's shapes).

`shapes` (request checks, answer normalisation), `target` (the SSRF policy) and `page` (HTML to
text) are pure; `service.WebSearch` is the thin I/O layer around them: SearXNG first, Ollama's
hosted web search as the fallback, and web_fetch connecting only to addresses the policy allowed.
"""
