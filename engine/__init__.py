"""Canopy's engine: MLX models, token trees, speculative decoding, streamed targets.

Never imports PySide6 or ``app`` (tests/engine/test_boundary.py enforces it).
"""
