"""Checks of the papers' claims that users run on their own models (grows with later work)."""

__all__: list[str] = []
