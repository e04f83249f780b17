"""The not-a-card pictures, for the tests: the generator lives in :mod:`training.notcards` (training's "other"
class learns from its seeds 100 and up); the tests draw seeds 0-9.
"""

from training.notcards import KINDS, TRAINING_SEEDS, NotCard, notcard_images  # noqa: F401
