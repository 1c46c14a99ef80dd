"""Offline evaluation: recorded per-prompt results of real models, and policies replayed over them."""
