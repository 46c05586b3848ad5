"""The asker's language: moved to :mod:`knowledge.language` (retrieval routes by it too); kept importable here
until the modules that import it from ``bot`` are updated."""

from knowledge.language import ENGLISH, LANGUAGES, clean, detect_language, warm_up

__all__ = ["ENGLISH", "LANGUAGES", "clean", "detect_language", "warm_up"]
