"""The classes a network is trained on: the twelve conditions, and "other" (none of them) when the run has it.

Label indices 0-11 are :data:`shared.labels.CODES`; :data:`OTHER` (12) is "other", the 13th output a run
with ``--other-class`` trains (outlier exposure, :mod:`training.other_class`). Nothing here imports
Paddle or other training modules, so every module can ask.
"""

from __future__ import annotations

from shared.labels import CODES

OTHER = len(CODES)  # label index of "other": after the twelve codes
OTHER_CODE = "other"


def num_outputs(other_class: bool) -> int:
    """Outputs of a network: the twelve conditions, plus "other" when the run has that class."""
    return len(CODES) + int(bool(other_class))


def label_code(index: int) -> str:
    """``A01`` … ``A12``, ``other`` (index :data:`OTHER`), or ``unlabelled`` (-1)."""
    if 0 <= index < len(CODES):
        return CODES[index]
    return OTHER_CODE if index == OTHER else "unlabelled"
