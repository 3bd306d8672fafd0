"""Settings: a plain dataclass and its QSettings round trip.

The dialog that edits them is app/settings_dialog.py; model choice (pickers, the compatibility
check, the budget plan) is app/model_choice.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from PySide6.QtCore import QSettings

from engine.config import (
    BRANCH_SOURCES,
    LIMITS,
    MODES,
    AdaptConfig,
    GenerationConfig,
    LookupConfig,
    SamplingConfig,
    TreeConfig,
)

MB = 2**20
_GEN = GenerationConfig()  # every default below is the engine's (engine/config.py)
_ADAPT = AdaptConfig()

# AppSettings field -> the engine setting whose LIMITS it must respect
LIMITED = {
    "tree_max_nodes": "max_nodes",
    "tree_max_depth": "max_depth",
    "tree_threshold": "threshold",
    "chain_length": "chain_length",
    "temperature": "temperature",
    "top_p": "top_p",
    "max_tokens": "max_tokens",
}
POSITIVE = ("adapt_idle_minutes", "adapt_cap_mb")


@dataclass
class AppSettings:
    target: str = ""
    draft: str = ""
    budget_mb: int = 0  # 0: the whole target stays resident
    mode: str = _GEN.mode
    tree_max_nodes: int = _GEN.tree.max_nodes
    tree_max_depth: int = _GEN.tree.max_depth
    tree_threshold: float = _GEN.tree.threshold
    tree_adaptive: bool = _GEN.tree.adaptive
    chain_length: int = _GEN.chain_length
    lookup_branches: bool = bool(_GEN.lookup.sources)  # tree: prompt lookup + n-gram branches
    temperature: float = _GEN.sampling.temperature
    top_p: float = _GEN.sampling.top_p
    seed: int = -1  # -1: random
    max_tokens: int = _GEN.max_tokens
    tint_tokens: bool = True
    tint_by_source: bool = False  # View > Tint Tokens by Source
    system_prompt: str = ""
    record_chats: bool = True  # keep the target's top-k of each answer (local, bounded)
    adapt_when_idle: bool = True  # distil recordings into the draft when the app is idle
    adapt_idle_minutes: float = 3.0
    adapt_cap_mb: int = _ADAPT.cap_bytes // MB

    @property
    def budget_bytes(self) -> int | None:
        return self.budget_mb * MB if self.budget_mb > 0 else None

    def adapt_config(self) -> AdaptConfig:
        return AdaptConfig(cap_bytes=max(1, self.adapt_cap_mb) * MB)

    def generation_config(self) -> GenerationConfig:
        return GenerationConfig(
            mode=self.mode if self.mode in MODES else _GEN.mode,
            max_tokens=self.max_tokens,
            sampling=SamplingConfig(self.temperature, self.top_p,
                                    None if self.seed < 0 else self.seed),
            tree=TreeConfig(max_nodes=self.tree_max_nodes, max_depth=self.tree_max_depth,
                            threshold=self.tree_threshold, adaptive=self.tree_adaptive),
            chain_length=self.chain_length,
            lookup=LookupConfig(sources=BRANCH_SOURCES if self.lookup_branches else ()),
            tree_texts=True,  # the token tree view shows every node's text
        )


def load_settings(qs: QSettings) -> AppSettings:
    """Read every field, falling back to the default when missing, malformed or outside the
    engine's LIMITS (a settings file from an older version may hold top_p = 0)."""
    out = AppSettings()
    for f in fields(AppSettings):
        default = getattr(out, f.name)
        value = qs.value(f.name, default)
        try:
            if isinstance(default, bool):
                value = value if isinstance(value, bool) else str(value).lower() in ("1", "true")
            else:
                value = type(default)(value)
        except (TypeError, ValueError):
            value = default
        if f.name in LIMITED and not LIMITS[LIMITED[f.name]].allows(value):
            value = default
        if f.name in POSITIVE and not value > 0:
            value = default
        setattr(out, f.name, value)
    return out


def save_settings(qs: QSettings, settings: AppSettings) -> None:
    for key, value in asdict(settings).items():
        qs.setValue(key, value)
    qs.sync()
