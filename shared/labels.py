"""The twelve working conditions of a sucker-rod pumping well, in the fixed order models use.

Each condition also carries a one-line likely cause and usual remedy (what to check), in Chinese and
English, for the engineer reading an answer. They are deliberately conservative — "likely", "check",
"usually" — and each names the sources (:data:`SOURCES`) it rests on: a field glossary, manufacturers'
and service companies' notes, SPE abstracts and Chinese oilfield training notes on typical
dynamometer cards (典型示功图分析及措施). They are a starting point for a person, not a work order.
"""

from __future__ import annotations

from dataclasses import dataclass

# Where the advice comes from (checked when the text was written; quoted words are the sources').
SOURCES: dict[str, str] = {
    "slb-fluid-pound": "SLB Energy Glossary, 'fluid pound' (pump rate exceeds the formation's production rate; "
                       "'slowing down the pumping unit, shortening the stroke length or installing a smaller bottom "
                       "hole pump can correct this problem'), https://glossary.oilfield.slb.com/en/Terms/f/fluid_pound.aspx",
    "slb-gas-interference": "SLB Energy Glossary, 'gas interference', as quoted by Oil Authority (gas enters the pump, "
                            "the traveling valve opens slowly; 'a bottomhole separator or a gas anchor can correct gas "
                            "interference'), https://www.oilauthority.com/glossary/term/gas-interference",
    "slb-gas-anchor": "SLB Energy Glossary, 'gas anchor' (controls the entrance of gas; 'helps to prevent the "
                      "phenomenon called gas lock'), https://glossary.oilfield.slb.com/en/Terms/g/gas_anchor.aspx",
    "spe-25418": "SPE-25418-MS (1993), abstract: pumps installed with too small a compression ratio 'experience "
                 "chronic gas locking'; consider compression ratio together with downhole gas separation, "
                 "https://onepetro.org/SPEOKOG/proceedings-abstract/93POS/All-93POS/SPE-25418-MS/55478",
    "echometer-valves": "Echometer FAQ, leaking standing valve (pump card rounded at the bottom corners; judged on "
                        "the pump card and a traveling/standing valve test), "
                        "http://www.echometer.com/support/faqs/wa/leakvalve.html",
    "downhole-diagnostic": "Downhole Diagnostic, dynamometer card gallery (100 % fillage: rectangular pump card; "
                           "pump tag: 'I raised the rods to remove the tag'; gas expansion on the upstroke: poor "
                           "compression ratio, 'check the pump spacing'), https://downholediagnostic.com/dynamometer",
    "cn-typical-cards-measures": "示功图分析 / 典型示功图分析(全)，油田培训资料（各工况措施：供液不足—加强注水、调整工作参数、"
                                 "间歇抽油；气体影响—套管放压、加深泵挂、调小防冲距、装气锚；上顶下碰—调整防冲距；柱塞拔出"
                                 "工作筒—调节抽油杆短节；出砂—反洗井、检泵、加装滤砂器、长冲程慢冲次；凡尔漏失—洗井、检泵），"
                                 "https://www.360docs.net/doc/2e1918717.html",
    "cn-diagnosis-notes": "抽油机井示功图诊断及分析，油田培训资料（气锁—加深泵挂、增大沉没度、防冲距调到最小减小余隙体积、"
                          "下气锚和防气泵、合理放套气；惯性动载荷使上冲程载荷偏高、下冲程偏低），"
                          "https://www.360docs.net/doc/1519248201.html",
    "cn-typical-cards-lecture": "典型示功图分析及解决措施讲义，采油一厂地质研究所，2010（固定凡尔漏失：卸载线变缓、左下角和"
                                "右下角圆滑；游动阀漏失：提前卸载），https://www.360docs.net/doc/3b10243745.html",
    "cn-viscosity-valves": "采油工试题（原油粘度高：深井泵阀不易打开和关闭，降低泵的充满系数），"
                           "http://itgle.com/shiyoushihua/qckbVca.html",
    "sand-pumps": "Tieling DongSheng, 'Why Sucker Rod Pumps Fail in Sand Wells' (sand scores plunger and barrel, "
                  "settles into a stuck pump, erodes valve seats; sand-resistant pumps), "
                  "http://www.dsrodpump.com/newsinfo-why-sucker-rod-pumps-fail-in-sand-wells.html",
    "pprl-speed": "Peak polished-rod load grows with the square of the pumping speed (study quoted under 'PPRL'), "
                  "https://acronyms.thefreedictionary.com/PPRL",
}


@dataclass(frozen=True)
class Condition:
    """One working condition: its folder code, Chinese and English names, and advice.

    ``cause``/``remedy`` are Chinese, ``cause_en``/``remedy_en`` English; ``sources`` are keys of
    :data:`SOURCES`.
    """

    code: str
    name: str
    name_en: str
    cause: str = ""
    cause_en: str = ""
    remedy: str = ""
    remedy_en: str = ""
    sources: tuple[str, ...] = ()


CONDITIONS: tuple[Condition, ...] = (
    Condition(
        "A01", "工作正常", "normal",
        cause="泵充满良好，游动阀、固定阀工作正常。",
        cause_en="The pump fills and both valves hold.",
        remedy="无需处理；按常规继续监测功图。",
        remedy_en="Nothing to do; keep monitoring the cards as usual.",
        sources=("downhole-diagnostic",)),
    Condition(
        "A02", "供液不足", "insufficient liquid (fluid pound)",
        cause="泵的排量大于地层供液量，泵筒充不满（抽空），下冲程柱塞撞击液面。",
        cause_en="Likely the pump displaces more than the well delivers (pumped off): the barrel is part-filled "
                 "and the plunger hits the liquid on the downstroke.",
        remedy="降低冲次或缩短冲程、换小泵，或间歇抽油/泵控；检查注水补充地层能量。",
        remedy_en="Usually slow the unit down, shorten the stroke or fit a smaller pump, or pump intermittently "
                  "(pump-off control); check reservoir support (water injection).",
        sources=("slb-fluid-pound", "cn-typical-cards-measures")),
    Condition(
        "A03", "气体影响", "gas interference",
        cause="自由气随液体进泵，下冲程先压缩气体，游动阀打开滞后。",
        cause_en="Likely free gas enters the pump with the liquid; the downstroke compresses it before the "
                 "traveling valve opens.",
        remedy="下气锚或井下气液分离器；合理放套气（套管放压）；可加深泵挂、调小防冲距。",
        remedy_en="Usually a gas anchor or downhole gas separator; vent casing gas; consider setting the pump "
                  "deeper and reducing the pump spacing.",
        sources=("slb-gas-interference", "cn-typical-cards-measures")),
    Condition(
        "A04", "气锁", "gas lock",
        cause="泵筒内几乎全是气体，柱塞只压缩和膨胀气体，两阀都打不开，泵不排液。",
        cause_en="Likely the barrel is nearly all gas: the plunger only compresses and expands it, neither "
                 "valve opens and the pump delivers nothing.",
        remedy="防冲距调到最小以减小余隙（提高压缩比）；下气锚/防气泵；合理放套气、加深泵挂增大沉没度。",
        remedy_en="Usually minimise the dead space (smallest safe spacing, higher compression ratio); fit a gas "
                  "anchor or a gas-handling pump; vent casing gas and set the pump deeper.",
        sources=("slb-gas-anchor", "spe-25418", "cn-diagnosis-notes")),
    Condition(
        "A05", "上碰泵", "pump hitting up",
        cause="防冲距过大，上冲程末柱塞总成撞击泵上部。",
        cause_en="Likely the rods are spaced too high: at the top of the stroke the plunger assembly strikes "
                 "the top of the pump.",
        remedy="检查并调整防冲距（下放光杆）。",
        remedy_en="Check and adjust the rod spacing (lower the rods).",
        sources=("cn-typical-cards-measures",)),
    Condition(
        "A06", "下碰泵", "pump hitting down",
        cause="防冲距过小，下冲程末柱塞撞击固定阀（泵底）。",
        cause_en="Likely the rods are spaced too low: at the bottom of the stroke the plunger tags the "
                 "standing valve / pump bottom.",
        remedy="检查并调大防冲距（上提光杆）。",
        remedy_en="Check and raise the rod spacing (raise the rods) to remove the tag.",
        sources=("downhole-diagnostic", "cn-typical-cards-measures")),
    Condition(
        "A07", "游动阀关闭迟缓", "traveling valve closes late",
        cause="游动阀关闭滞后：原油黏度高，或阀球、阀座、阀罩磨损、卡阻。",
        cause_en="Likely the traveling valve seats late: viscous oil, or a worn or fouled ball, seat or cage.",
        remedy="憋压/试泵检查游动阀；洗井或降黏；持续存在则检泵。",
        remedy_en="Check the traveling valve (valve test); wash the well or reduce viscosity; pull and repair "
                  "the pump if it persists.",
        sources=("cn-viscosity-valves", "echometer-valves", "cn-typical-cards-measures")),
    Condition(
        "A08", "柱塞脱出泵工作筒", "plunger pulled out of barrel",
        cause="防冲距过大或泵筒偏短，上冲程柱塞被拉出工作筒，提前卸载。",
        cause_en="Likely the rods are spaced too high for the barrel: near the top of the upstroke the plunger "
                 "leaves the working barrel and the load drops early.",
        remedy="调节抽油杆短节（调小防冲距），校核泵筒长度与冲程是否匹配。",
        remedy_en="Respace the rods (adjust the pony rods) and check the barrel length against the stroke.",
        sources=("cn-typical-cards-measures",)),
    Condition(
        "A09", "游动阀漏", "traveling valve leak",
        cause="游动阀（阀球、阀座）或柱塞与泵筒间漏失，上冲程加载缓慢、提前卸载。",
        cause_en="Likely a leaking traveling valve (ball/seat) or plunger-barrel slippage: slow loading and "
                 "early unloading on the upstroke.",
        remedy="憋压/试泵确认漏失；洗井冲洗阀座；确认后检泵。",
        remedy_en="Confirm with a traveling-valve test; wash the well to flush the valve; pull and repair the "
                  "pump if confirmed.",
        sources=("cn-typical-cards-lecture", "echometer-valves", "cn-typical-cards-measures")),
    Condition(
        "A10", "固定阀漏", "standing valve leak",
        cause="固定阀漏失，下冲程卸载缓慢、提前加载，示功图下部两角圆滑。",
        cause_en="Likely a leaking standing valve: slow unloading and early loading, the card's lower corners "
                 "rounded.",
        remedy="憋压/试泵确认漏失；洗井冲洗阀座；确认后检泵。",
        remedy_en="Confirm with a standing-valve test; wash the well to flush the valve; pull and repair the "
                  "pump if confirmed.",
        sources=("echometer-valves", "cn-typical-cards-lecture", "cn-typical-cards-measures")),
    Condition(
        "A11", "砂影响+供液不足", "sand + insufficient liquid",
        cause="地层出砂进泵（柱塞受砂阻，载荷剧烈波动），同时泵抽空供液不足。",
        cause_en="Likely formation sand in the pump (jagged loads from sand drag on the plunger) while the pump "
                 "is also pumped off.",
        remedy="反洗井、检泵；加装滤砂器等防砂措施；采用长冲程、慢冲次；并按供液不足调整参数。",
        remedy_en="Back-wash the well and check the pump; add sand control (downhole filter/screen, "
                  "sand-tolerant pump); pump slower with a longer stroke; treat the fluid pound as for A02.",
        sources=("cn-typical-cards-measures", "sand-pumps", "slb-fluid-pound")),
    Condition(
        "A12", "惯性影响+工作正常", "inertia + normal",
        cause="冲次较高、杆柱长而重，惯性载荷使上冲程载荷偏高、下冲程偏低，功图顺时针偏转；泵况正常。",
        cause_en="Fast pumping of a long, heavy rod string: inertia raises loads early in the upstroke and "
                 "lowers them on the downstroke, rotating the card; the pump itself is normal.",
        remedy="核对最大、最小载荷是否在抽油杆和抽油机额定范围内；必要时降低冲次。",
        remedy_en="Check peak and minimum loads against the rod and unit ratings; slow the unit down if they "
                  "are near the limits.",
        sources=("cn-diagnosis-notes", "pprl-speed")),
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


def advice(code: str) -> dict[str, object]:
    """A condition's advice, JSON-ready: ``cause``/``remedy`` (zh), ``cause_en``/``remedy_en``, ``sources``.

    ``sources`` are the full citations of :data:`SOURCES`.

    Raises:
        KeyError: if the code is not one of the twelve.
    """
    c = BY_CODE[CODES[label_index(code)]]
    return {"cause": c.cause, "cause_en": c.cause_en, "remedy": c.remedy, "remedy_en": c.remedy_en,
            "sources": [SOURCES[key] for key in c.sources]}
