"""Counted nouns for the one-line messages: "1 seed", "3 seeds"."""

from __future__ import annotations


def plural(n: int, word: str) -> str:
    """`n` and `word`, with an s unless n is 1."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
