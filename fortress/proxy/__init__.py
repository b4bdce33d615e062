"""The proxy process: asyncio protocols on uvloop + httptools. Never imports aiosqlite."""
