"""The zero-shot method interface: region prompts in, per-class distributions out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from landuse.config import Config

REJECT_COLUMNS = ("region_id", "reason", "raw")


@dataclass(frozen=True)
class RegionPrompts:
    """What every method receives for N regions and C classes."""

    region_ids: np.ndarray  # [N] int64
    paragraphs: list[str]  # [N] the POI paragraph of each region
    prompts: list[str]  # [N] instruction + paragraph + question (what a language model is asked)
    classes: list[str]  # [C] class names, in the config's order
    class_texts: list[str]  # [C] one description per class (text: "an area dominated by ..."; image: CLIP prompts)


@dataclass
class ZeroShotOutput:
    """A method's answer: distributions for the regions it could score, rejects with reasons for the others."""

    probs: np.ndarray  # [N, C] rows sum to 1 where scored; zeros elsewhere
    scored: np.ndarray  # [N] bool
    rejects: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(REJECT_COLUMNS)))
    usage: dict[str, Any] = field(default_factory=dict)  # requests, tokens, cost, cache hits, model, ... (manifest)


class ZeroShotMethod(ABC):
    """One zero-shot method; subclasses register with :func:`register` under their ``name``."""

    name: ClassVar[str]

    def __init__(self, config: Config) -> None:
        self.config = config

    @abstractmethod
    def score(self, prompts: RegionPrompts) -> ZeroShotOutput:
        """Per-class distributions for every region of ``prompts`` (or a reject row saying why not)."""


METHODS: dict[str, type[ZeroShotMethod]] = {}


def register(cls: type[ZeroShotMethod]) -> type[ZeroShotMethod]:
    """Class decorator: make a method available to ``landuse run zeroshot --method <name>``."""
    METHODS[cls.name] = cls
    return cls


def method(name: str, config: Config) -> ZeroShotMethod:
    """The named method, importing its module on first use."""
    import importlib

    if name not in METHODS:
        importlib.import_module(f"landuse.zeroshot.{name}")
    return METHODS[name](config)
