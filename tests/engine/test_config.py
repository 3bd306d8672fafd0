"""Every sampling and tree setting is checked once, when its config is constructed."""

from __future__ import annotations

import math

import pytest

from engine.config import LIMITS, GenerationConfig, SamplingConfig, StreamConfig, TreeConfig
from engine.errors import CanopyError, ConfigError

BAD = [
    (SamplingConfig, "temperature", -0.1),
    (SamplingConfig, "temperature", math.nan),
    (SamplingConfig, "top_p", 0.0),
    (SamplingConfig, "top_p", -0.5),
    (SamplingConfig, "top_p", 1.5),
    (SamplingConfig, "seed", -1),
    (SamplingConfig, "seed", 1.5),
    (TreeConfig, "max_nodes", 0),
    (TreeConfig, "max_depth", 0),
    (TreeConfig, "top_k", 0),
    (TreeConfig, "expand_width", 0),
    (TreeConfig, "threshold", -0.01),
    (TreeConfig, "threshold", 1.01),
    (TreeConfig, "max_nodes", 4.5),
    (TreeConfig, "max_forwards", 0),
    (TreeConfig, "verify_cost_prior", -1.0),
    (StreamConfig, "prefetch", 0),
    (GenerationConfig, "max_tokens", 0),
    (GenerationConfig, "max_tokens", "12"),
    (GenerationConfig, "chain_length", 0),
    (GenerationConfig, "prefill_chunk", 0),
    (GenerationConfig, "mode", "beam"),
]


@pytest.mark.parametrize(("kind", "name", "value"), BAD)
def test_invalid_settings_raise_one_clear_error(kind, name, value):
    with pytest.raises(ConfigError) as info:
        kind(**{name: value})
    message = str(info.value)
    assert name in message and repr(value) in message  # names the setting and the value
    assert isinstance(info.value, CanopyError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "config",
    [SamplingConfig(0.0, 1.0), SamplingConfig(2.5, 1e-6, seed=0), TreeConfig(threshold=0.0),
     TreeConfig(max_nodes=1, max_depth=1, top_k=1, expand_width=1, threshold=1.0),
     GenerationConfig(max_tokens=1, chain_length=1, prefill_chunk=1)],
)
def test_boundary_values_are_allowed(config):
    assert config is not None


def test_every_limit_is_checked_by_some_config():
    names = {f for kind in (SamplingConfig, TreeConfig, GenerationConfig, StreamConfig)
             for f in kind.__dataclass_fields__}
    assert set(LIMITS) <= names


def test_messages_say_what_is_allowed():
    with pytest.raises(ConfigError, match=r"top_p = 0\.0.*> 0 and <= 1"):
        SamplingConfig(top_p=0.0)
