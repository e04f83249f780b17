"""The twelve working conditions of a sucker-rod pumping well, in the fixed order models use."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Condition:
    """One working condition: its folder code and its Chinese and English names."""

    code: str
    name: str
    name_en: str


CONDITIONS: tuple[Condition, ...] = (
    Condition("A01", "工作正常", "normal"),
    Condition("A02", "供液不足", "insufficient liquid (fluid pound)"),
    Condition("A03", "气体影响", "gas interference"),
    Condition("A04", "气锁", "gas lock"),
    Condition("A05", "上碰泵", "pump hitting up"),
    Condition("A06", "下碰泵", "pump hitting down"),
    Condition("A07", "游动阀关闭迟缓", "traveling valve closes late"),
    Condition("A08", "柱塞脱出泵工作筒", "plunger pulled out of barrel"),
    Condition("A09", "游动阀漏", "traveling valve leak"),
    Condition("A10", "固定阀漏", "standing valve leak"),
    Condition("A11", "砂影响+供液不足", "sand + insufficient liquid"),
    Condition("A12", "惯性影响+工作正常", "inertia + normal"),
)

CODES: tuple[str, ...] = tuple(c.code for c in CONDITIONS)
BY_CODE: dict[str, Condition] = {c.code: c for c in CONDITIONS}


def label_index(code: str) -> int:
    """Return the class index of a condition code such as ``"A02"``.

    Raises:
        KeyError: if the code is not one of the twelve, with the valid codes listed.
    """
    try:
        return CODES.index(code)
    except ValueError:
        raise KeyError(f"unknown condition code {code!r}; expected one of {', '.join(CODES)}") from None


def labels_as_dicts() -> list[dict[str, str]]:
    """The label table as JSON-ready dicts (``code``, ``name``, ``name_en``), for model metadata."""
    return [{"code": c.code, "name": c.name, "name_en": c.name_en} for c in CONDITIONS]
