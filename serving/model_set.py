"""The models one service (or one batch run) serves: at most one predictor per kind, and which answers a card.

The routing rule and the preparation of a card are :mod:`serving.routing`'s (Paddle-free); this module
holds the loaded predictors (:mod:`serving.predictor`) that the rule chooses between, and in the service
the dynamic batcher in front of them (:mod:`serving.batcher`, :meth:`ModelSet.start_batcher`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from serving.batcher import Batcher, BatchObserver
from serving.card_facts import CardFacts
from serving.predictor import Predictor, StartupError, load_predictor
from serving.routing import CardInput, Router


class Routed(NamedTuple):
    """A card routed and prepared in the service: the predictor that answers it, the input kind it read
    (``png|csv|pair``), its input, and what its files say (:class:`serving.card_facts.CardFacts`)."""

    predictor: Predictor
    used: str
    input: CardInput
    facts: CardFacts


class ModelSet:
    """At most one predictor per kind, all with the same labels, and the router over them.

    Args:
        predictors: built predictors, the image model first when there is one (load order).

    Raises:
        StartupError: two folders of the same kind, labels that differ, or no model at all.
    """

    def __init__(self, predictors: Sequence[Predictor]) -> None:
        self.by_kind: dict[str, Predictor] = {}
        for p in predictors:
            if p.kind in self.by_kind:
                raise StartupError(f"two {p.kind} models: {self.by_kind[p.kind].model_dir} and {p.model_dir}; "
                                   "load at most one per kind")
            self.by_kind[p.kind] = p
        if not self.by_kind:
            raise StartupError("no model to serve")
        # The label table every answer uses; all models must agree on it.
        self.primary = self.by_kind.get("image") or next(iter(self.by_kind.values()))
        for p in self.by_kind.values():
            if p.codes != self.primary.codes:
                raise StartupError(f"{p.model_dir}: labels {p.codes} differ from {self.primary.model_dir}'s")
        self.router = Router(tuple(p.inputs for p in self.by_kind.values()))
        self.batcher: Batcher | None = None

    @classmethod
    def load(cls, folders: Sequence[str | os.PathLike], **kwargs: Any) -> "ModelSet":
        """Build and warm up one predictor per folder (``kwargs`` as for :class:`serving.predictor.Predictor`).

        Raises:
            StartupError: a folder cannot be served, or the set cannot (see the class).
        """
        return cls([load_predictor(Path(f), **kwargs) for f in folders])

    def get(self, kind: str) -> Predictor | None:
        """The loaded model of a kind, or None."""
        return self.by_kind.get(kind)

    def route(self, png: bytes | None, csv: bytes | None) -> tuple[Predictor, str]:
        """Which model answers a card with these files, and which input it reads (``png|csv|pair``).

        Raises:
            CardError: no loaded model can read what arrived (e.g. a PNG with only a series model).
        """
        kind, used = self.router.route(png, csv)
        return self.by_kind[kind], used

    def prepare(self, png: bytes | None, csv: bytes | None) -> Routed:
        """Route a card and build its model input and facts (:meth:`serving.routing.Router.prepare`).

        Returns:
            :class:`Routed`; ``predictor.predict_cards([input])`` answers the card.

        Raises:
            CardError: no loaded model reads the card (``serving.routing.UnusableCard``: the routed model
                cannot read it).
        """
        if self.batcher is None:
            prepared = self.router.prepare(png, csv)
        else:
            with self.batcher.preparing():  # a call that is not full waits for this card (serving.batcher)
                prepared = self.router.prepare(png, csv)
        return Routed(self.by_kind[prepared.kind], prepared.used, prepared.input, prepared.facts)

    def start_batcher(self, max_batch: int, max_wait_ms: float = 0.0, observer: BatchObserver | None = None) -> Batcher:
        """Put a dynamic batcher in front of the predictors: from now on one thread makes every Paddle call.

        Returns when the batcher thread has warmed every predictor up. See :class:`serving.batcher.Batcher`.

        Raises:
            RuntimeError: the batcher could not warm up (or one is already running).
        """
        if self.batcher is not None and self.batcher.alive:
            raise RuntimeError("this model set already has a batcher")
        self.batcher = Batcher(self.by_kind, max_batch, max_wait_ms, observer).start()
        return self.batcher

    def predict_cards(self, kind: str, inputs: Sequence[CardInput]) -> np.ndarray:
        """The network's output for cards prepared for the model of ``kind``: through the batcher when one
        runs (concurrent requests share a call), else straight from that predictor.

        Returns:
            ``float32 [len(inputs), output width]``: the raw first output, which that predictor's ``output``
            (:class:`shared.model_outputs.OutputContract`) reads into probabilities, review and open set.

        Raises:
            serving.batcher.BatcherClosed: the batcher is shutting down.
            serving.batcher.PredictionFailed: the predictor raised on these inputs (through the batcher).
        """
        if self.batcher is not None:
            return self.batcher.predict_cards(kind, inputs)
        return self.by_kind[kind].predict_cards(inputs)

    def close(self) -> None:
        """Stop the batcher, answering what it has queued (nothing to do without one)."""
        if self.batcher is not None:
            self.batcher.close()

    def describe(self) -> dict[str, Any]:
        """``GET /model``'s ``models``: one entry per kind, with how its answers are read (``answers``: output
        format, temperature, review rule, open-set rule -- :meth:`shared.model_outputs.OutputContract.describe`)."""
        return {kind: {**p.model_id, "folder": str(p.model_dir), "metrics": p.meta.get("metrics", {}),
                       "answers": p.output.describe()}
                for kind, p in self.by_kind.items()}
