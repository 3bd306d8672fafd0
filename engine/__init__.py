"""Canopy's engine: MLX models, token trees, speculative decoding, streamed targets.

Never imports PySide6 or ``app`` (tests/engine/test_boundary.py enforces it).

Layout (the folder tree is the design):
- ``models/``     architectures (forward with per-token positions and an additive mask), KV cache
- ``formats/``    model folders, GGUF import, tokenizers, demo pairs, draft/target compatibility
- ``decoding/``   token tree, drafters, acceptance (pure), sampling, the generator, stats
- ``streaming/``  safetensors index and reader, layer store (IO thread, budget), streamed model
- ``costmodel/``  formulas, the per-step policy, calibration, Apple Silicon device profiles
- ``adapt/``      online draft adaptation: record the target, LoRA-distil the draft, use it
- ``bench/``      benchmark runs and reports
- top level: config (defaults), events, errors, session, runtime (the one MLX thread)

Public API: ``Session``, ``GenerationConfig``, ``SamplingConfig``, ``TreeConfig``, the event
types, ``CanopyError`` / ``ConfigError`` and ``LIMITS`` (what each setting accepts). ``Session``
is imported lazily so that reading configs and events does not load MLX.
"""

from .config import LIMITS, GenerationConfig, SamplingConfig, TreeConfig
from .errors import CanopyError, ConfigError
from .events import Event, Failed, Finished, LoadProgress, PrefillDone, StepEvent

__all__ = [
    "LIMITS",
    "CanopyError",
    "ConfigError",
    "Event",
    "Failed",
    "Finished",
    "GenerationConfig",
    "LoadProgress",
    "PrefillDone",
    "SamplingConfig",
    "Session",
    "StepEvent",
    "TreeConfig",
]


def __getattr__(name: str):
    if name == "Session":
        from .session import Session

        return Session
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
