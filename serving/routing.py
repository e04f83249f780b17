"""Where a card goes: which model kind answers it, and how its files become that model's input.

The one home of the model kinds on the serving side, Paddle-free (numpy, OpenCV and ``shared/`` only), so
the HTTP app, the batch scorer's worker processes and the reload check all route and prepare a card with
the very same code:

========================  ==========================================================  ==========
what arrives              who answers                                                 input kind
========================  ==========================================================  ==========
PNG                       image                                                       ``png``
CSV                       series if loaded, else image (the CSV is rendered)          ``csv``
PNG + CSV of one card     dual if loaded, else image on the PNG                       ``pair``
========================  ==========================================================  ==========

A model kind reads (:class:`ModelInputs`):

* ``image`` -- the filled card, ``float32 [N, 1, 190, 400]`` (:mod:`shared.preprocess`);
* ``series`` -- the raw position/load samples of a CSV, ``float32 [N, 5, 256]`` (:mod:`shared.series`);
* ``dual`` -- both, fed to the network by name (``image``, ``series``).

The path of a card: :func:`card_files` (a card of a zip or folder; the HTTP app builds the same pair from
the request in :mod:`serving.uploads`) -> :meth:`Router.prepare` (:func:`route_kind`, then
:meth:`ModelInputs.prepare`) -> :func:`stack_inputs` -> the predictor of that kind
(:meth:`serving.predictor.Predictor.predict_cards`) -> :mod:`serving.answers`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import NamedTuple, Sequence

import numpy as np

from serving.card_facts import CardFacts, read_facts
from shared.card_pair import check_pair
from shared.cards import Card, CardError, decode_card_png, read_card_csv
from shared.dataset_io import CARD_SUFFIXES, CardFile, CardSource
from shared.preprocess import PreprocessConfig, TracedOutline, card_ink, filled_card, to_model_input, trace_outline
from shared.series import SeriesConfig, preprocess_series

KINDS = ("image", "series", "dual")

# One card's input to its model: one array per network input, without the batch axis. The image part is the
# filled card as uint8 [H, W] (4x smaller to pass between processes; scaled to the model input by
# stack_inputs), the series part float32 [C, L].
CardInput = dict[str, np.ndarray]
# A batch of model inputs: {input name: float32 [N, ...]}, what every predictor takes.
Batch = dict[str, np.ndarray]


# ---------------------------------------------------------------------------------- cards that arrive


def card_files(card: CardFile) -> tuple[bytes | None, bytes | None]:
    """The ``(png, csv)`` of a card read from a zip or folder (either may be None).

    Raises:
        CardError: the card has neither file readable (the message says why).
    """
    if card.png is None and card.csv is None:
        reason = "; ".join(card.errors) or "no PNG or CSV file"
        raise CardError(f"card {card.id} cannot be read: {reason}")
    return card.png, card.csv


def skipped_card_members(source: CardSource, seen_ids: set[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """Members the safe reader refused that look like card files: ``(id, name, reason)``.

    They are cards that could not be read (too big, encrypted, unsafe name, ...) and are reported as
    error rows; other refused members (a README, a nested zip) go to the summary only.
    """
    out = []
    for problem in source.problems:
        pure = PurePosixPath(problem.name.replace("\\", "/"))
        if pure.suffix.lower() in CARD_SUFFIXES:
            folder = pure.parent.name
            if (folder, pure.stem) not in seen_ids:
                out.append((pure.stem, problem.name, problem.reason))
    return out


# ---------------------------------------------------------------------------------- the routing table


def route_kind(kinds: Sequence[str], has_png: bool, has_csv: bool) -> tuple[str, str]:
    """The routing rule (module table): which loaded model kind answers a card with these files, and what it reads.

    Args:
        kinds: the loaded model kinds, in load order (for the message).
        has_png, has_csv: which files the card has.

    Returns:
        ``(kind, input)`` with input ``png``, ``csv`` or ``pair``.

    Raises:
        CardError: no loaded model can read what arrived (e.g. a PNG with only a series model).
    """
    if has_png and has_csv and "dual" in kinds:
        return "dual", "pair"
    if not has_png and has_csv and "series" in kinds:
        return "series", "csv"
    if "image" in kinds:
        return "image", "png" if has_png else "csv"
    if has_csv and "series" in kinds:
        return "series", "csv"
    raise CardError(f"no loaded model reads this card ({'PNG' if has_png else 'nothing'} without CSV); "
                    f"loaded: {', '.join(kinds)}")


# ---------------------------------------------------------------------------------- what each kind reads


@dataclass(frozen=True)
class ModelInputs:
    """What a model kind reads and how a card's files become it: the preprocessing of each network input.

    Configs only (no predictor, no Paddle), so it pickles to the batch scorer's ``spawn`` workers in a few
    bytes. A predictor builds its own from ``meta.json`` (:attr:`serving.predictor.Predictor.inputs`).

    Attributes:
        kind: ``image``, ``series`` or ``dual``.
        image: the image input's preprocessing (image and dual models).
        series: the series input's preprocessing (series and dual models).
    """

    kind: str
    image: PreprocessConfig | None = None
    series: SeriesConfig | None = None

    def __post_init__(self) -> None:
        wanted = {"image": (True, False), "series": (False, True), "dual": (True, True)}.get(self.kind)
        if wanted is None:
            raise ValueError(f"unknown model kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if wanted != (self.image is not None, self.series is not None):
            raise ValueError(f"a {self.kind} model needs exactly the preprocessing of its inputs "
                             f"({' and '.join(n for n, w in zip(('image', 'series'), wanted) if w)})")

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """``{input name: shape without the batch axis}``, e.g. ``{"image": (1, 190, 400)}``."""
        shapes: dict[str, tuple[int, ...]] = {}
        if self.image is not None:
            shapes["image"] = tuple(self.image.input_shape)
        if self.series is not None:
            shapes["series"] = tuple(self.series.input_shape)
        return shapes

    def decode(self, png: bytes | None, csv: bytes | None) -> tuple[np.ndarray | None, Card | None]:
        """A card's files -> the decoded files this kind reads: ``(outline mask or None, samples or None)``.

        An image model reads the PNG, or else the CSV (rendered by :meth:`build`); a series model the CSV; a
        dual model both (the PNG first: its error is the one reported), once
        :func:`shared.card_pair.check_pair` found them to be one card. :meth:`Router.prepare` passes only the
        files the routing rule chose.

        Raises:
            CardError: a file the model needs is missing or is not a usable card;
                ``shared.card_pair.MismatchedPair`` when a dual model's PNG and CSV are two different cards.
        """
        if self.kind == "image":
            if png is None and csv is None:
                raise CardError("the card has no PNG or CSV file")
            return (decode_card_png(png), None) if png is not None else (None, read_card_csv(csv))
        if csv is None:
            raise CardError(f"the {self.kind} model needs the card's CSV (position/load samples)")
        if self.kind == "series":
            return None, read_card_csv(csv)
        if png is None:
            raise CardError("the dual model needs the card's PNG as well as its CSV")
        ink, card = decode_card_png(png), read_card_csv(csv)
        check_pair(ink, card)  # a PNG and a CSV of two different cards are refused, not mixed
        return ink, card

    def build(self, ink: np.ndarray | None, card: Card | None, traced: TracedOutline | None = None) -> CardInput:
        """Decoded files (:meth:`decode`) -> this kind's input (:data:`CardInput`).

        Args:
            ink, card: the decoded files.
            traced: ``shared.preprocess.trace_outline(ink)`` when the caller has it (the card's facts read it too).

        Raises:
            CardError: the files are not a usable card for this model.
        """
        x: CardInput = {}
        if self.image is not None:
            x["image"] = (filled_card(ink, self.image, traced) if ink is not None
                          else filled_card(card_ink(card), self.image))
        if self.series is not None:
            x["series"] = preprocess_series(card, self.series)
        return x

    def prepare(self, png: bytes | None, csv: bytes | None) -> CardInput:
        """A card's files -> this kind's input (:meth:`decode`, then :meth:`build`).

        Raises:
            CardError: as :meth:`decode` and :meth:`build`.
        """
        return self.build(*self.decode(png, csv))


def stack_inputs(inputs: Sequence[CardInput]) -> Batch:
    """Per-card inputs of one model -> its batch ``{input name: float32 [N, ...]}`` (filled cards scaled here).

    Raises:
        ValueError: no inputs.
    """
    if not inputs:
        raise ValueError("no card inputs to stack")
    batch: Batch = {}
    for name in inputs[0]:
        if name == "image":  # scaled straight into the batch: no per-card temporary (about 3x cheaper)
            first = inputs[0][name]
            batch[name] = np.empty((len(inputs), 1, *first.shape), np.float32)
            for row, x in zip(batch[name], inputs):
                to_model_input(x[name], out=row)
        else:
            batch[name] = np.stack([x[name] for x in inputs])
    return batch


# ---------------------------------------------------------------------------------- route, then prepare


class Prepared(NamedTuple):
    """A routed card: the model kind that answers it, the input kind it read, its input, and what its files
    say before any model (:class:`serving.card_facts.CardFacts`: the structural check and the measures)."""

    kind: str
    used: str
    input: CardInput
    facts: CardFacts


class UnusableCard(CardError):
    """The model a card was routed to cannot read it. The message is the preprocessing's own.

    Attributes:
        kind: the model kind it was routed to.
        used: the input kind it read (``png``, ``csv`` or ``pair``).
    """

    def __init__(self, kind: str, used: str, reason: CardError) -> None:
        super().__init__(str(reason))
        self.kind = kind
        self.used = used


@dataclass(frozen=True)
class Router:
    """The loaded model kinds and what each reads: routes a card and builds its input, in one call.

    Picklable and Paddle-free (the batch scorer's worker processes get one); :class:`serving.model_set.ModelSet`
    holds the one of the service.
    """

    inputs: tuple[ModelInputs, ...]  # one per loaded model, in load order

    @property
    def kinds(self) -> tuple[str, ...]:
        """The loaded model kinds, in load order."""
        return tuple(i.kind for i in self.inputs)

    def route(self, png: bytes | None, csv: bytes | None) -> tuple[str, str]:
        """``(kind, input kind)`` for a card with these files (:func:`route_kind`).

        Raises:
            CardError: no loaded model reads this card.
        """
        return route_kind(self.kinds, png is not None, csv is not None)

    def prepare(self, png: bytes | None, csv: bytes | None) -> Prepared:
        """Route a card, then build its input with the preprocessing of the model that answers it, and read
        its facts (structural check, measures) from the same decoded files.

        Raises:
            CardError: no loaded model reads this card.
            UnusableCard: (a ``CardError``) the routed model cannot read it; says which model and input.
        """
        kind, used = self.route(png, csv)
        model_inputs = next(i for i in self.inputs if i.kind == kind)
        try:
            ink, card = model_inputs.decode(png if used != "csv" else None, csv if used != "png" else None)
            # The outline's line, fill and line width, once: the model's fill, the check and the measures read them.
            traced = trace_outline(ink) if ink is not None else None
            x = model_inputs.build(ink, card, traced)
        except CardError as exc:
            raise UnusableCard(kind, used, exc) from exc
        return Prepared(kind, used, x, read_facts(ink, card, traced))
