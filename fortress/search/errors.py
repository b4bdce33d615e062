"""The one error type of web search and fetch: an HTTP status and a message safe to show the client."""

from __future__ import annotations


class SearchError(Exception):
    """Why a search or fetch gave no answer; `message` never holds a secret."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
