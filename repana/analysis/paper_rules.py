"""The verdict rules: one pure function per claim of Raghu et al. (ICLR 2020, arXiv 1909.09157) that tests a
reproduction against it, ``verdict_*(table) -> (verdict, reason)`` with verdict :data:`AGREES` or
:data:`DISAGREES` (:class:`Verdict`, whose value is its one rendering). The paper's numbers and quotes are
data (:mod:`repana.analysis.paper_data`); analyses import both through :mod:`repana.analysis.paper_values`.

Each rule encodes the claim as the paper words it; where the words are qualitative ("hardly affects",
"comparable", "the same") the tolerance is the largest difference the paper itself describes with those
words, named below: the paper's own tables agree with each rule, and no rule is looser than the paper's
words. A reproduction's sampling noise is allowed for on top (:func:`difference_noise`).

The noise, one definition. A cell's ``spread`` is the **95% confidence-interval half-width of its
mean** (:func:`mean_ci95_half_width`): with n >= 2 seeds, ``t(0.975, n - 1) * std / sqrt(n)`` (std over
seeds, ddof=1; each seed's value is a mean over test episodes, so its episode noise is part of the
spread between seeds); with one seed, that run's 95% CI over episodes (the spread between random
initialisations is then unknown and not counted). Two cells differ beyond noise when their
difference exceeds ``sqrt(spread_a**2 + spread_b**2)``, the 95% CI half-width of a difference of two
independent means (conservative when both were measured on the same episodes). Callers build cells
with :func:`repana.analysis.report.judged_cell`, the one place where fractions become percent.

Inputs: accuracies in **percent** (the paper's unit; a table of fractions raises ``InputError``). A
cell is a number, a ``(value, spread)`` pair, or a mapping with ``value``/``accuracy``/``mean`` and
optionally ``spread``/``ci95``/``std``. :func:`cells_from_records` turns a DataFrame's
``to_dict("records")`` (or the DataFrame itself) into such cells.

Stdlib only: importing this module imports neither numpy nor pandas nor torch.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any, Iterable, Mapping, Sequence

from repana.analysis.paper_data import load_paper
from repana.errors import InputError

class Verdict(str, Enum):
    """A finding's verdict against the paper's claim; its value is its one rendering in reports."""

    AGREES = "agrees"
    DISAGREES = "does not agree"
    NO_VERDICT = "no verdict"

    def __str__(self) -> str:
        return self.value


AGREES, DISAGREES, NO_VERDICT = Verdict.AGREES, Verdict.DISAGREES, Verdict.NO_VERDICT
Judgement = tuple[Verdict, str]  # (AGREES | DISAGREES, reason): what every verdict_* rule returns

# The training algorithms the paper's claims are about: MAML and ANIL (Tables 1-3, Figures 2-3, 5) and the
# other regimes of Tables 4 and 5 (multiclass pretraining, multitask, NIL training; repana's names and
# aliases). A network trained otherwise (BOIL, arXiv 2008.08882; FOMAML; Reptile) has no claim to be
# judged against: the analyses report it without a verdict (:func:`judged`).
PAPER_ALGORITHMS = ("maml", "anil", "multiclass", "pretrain", "multitask", "nil_training", "nil")


def judged(algorithm: str) -> bool:
    """True when the paper makes claims about networks trained with ``algorithm`` (:data:`PAPER_ALGORITHMS`)."""
    return algorithm in PAPER_ALGORITHMS


# Tolerances, each the largest difference the paper itself describes with the words it uses.
BODY_CCA_ABOVE = 0.9          # Section 3.2.2: conv layers "CCA similarity scores of >0.9"
HEAD_CCA_BELOW = 0.5          # Section 3.2.2: head "a CCA similarity of less than 0.5"
FREEZING_TOLERANCE_POINTS = 1.5
"""Table 1, MiniImageNet-5way-5shot: 61.7 (none frozen) -> 60.2 ({1,2,3} and {1,2,3,4} frozen), the
largest change the paper calls "hardly affects accuracy" / "does not affect accuracy"."""
COMPARABLE_DEFICIT_POINTS = 1.6
"""Table 2, MiniImageNet-5way-5shot: ANIL 61.5 vs MAML 63.1, the largest shortfall the paper calls
"matches" / "comparable accuracy" (Table 4's NIL shortfall, 62.2 vs 63.1, is smaller)."""
COMPARABLE_SURPLUS_POINTS = 3.0
"""Table 4, Omniglot-20way-1shot: NIL 96.7 vs MAML 93.7, the largest excess the paper calls
"performs comparably" (Table 2's largest, ANIL 96.2 vs MAML 93.7, is 2.5). It bounds ANIL's surplus over
MAML: "matches", "identically" are two-sided words, so ANIL far *above* MAML disagrees. Not so for NIL
(Table 4 claims NIL is as good as the adapted networks: :func:`verdict_nil_matches` is one-sided) nor for
the RL rows, where ANIL's 363.2 vs 170.4 return is called "comparable" (:func:`verdict_anil_matches_maml_rl`)."""
SAME_SIMILARITY_TOLERANCE = 0.03
"""Table 3, CKA: ANIL-MAML 0.83 vs ANIL-ANIL 0.86, the largest gap the paper calls "the same average
similarity scores"."""
CCA_MEASURES = ("cca", "mean_cca", "cca_r2", "svcca", "pwcca")
CKA_MEASURES = ("cka", "cka_linear", "cka_debiased", "cka_rbf")
BODY_LAYERS = ("conv1", "conv2", "conv3", "conv4")
PRINT_EPSILON = 1e-9
"""Slack for binary floating point in comparisons against tolerances that are differences of printed
decimals (60.2 - 61.7 is -1.5000000000000036 in float64)."""


def _cell_value(cell: Any) -> tuple[float, float]:
    """(value, spread) of a cell: a number, a (value, spread) pair or a mapping; spread 0 when absent."""
    if isinstance(cell, Mapping):
        found = next((cell[k] for k in ("value", "accuracy", "mean", "similarity") if k in cell), None)
        if found is None:
            raise InputError(f"a cell {dict(cell)!r} has no value / accuracy / mean / similarity")
        spread = next((cell[k] for k in ("spread", "ci95", "std", "half_width") if k in cell), 0.0)
        value_, spread_ = found, spread
    elif isinstance(cell, (tuple, list)):
        if len(cell) != 2:
            raise InputError(f"a cell {cell!r} must be (value, spread)")
        value_, spread_ = cell
    else:
        value_, spread_ = cell, 0.0
    try:
        value_ = float(value_)
        spread_ = 0.0 if spread_ is None else float(spread_)
    except (TypeError, ValueError):
        raise InputError(f"a cell {cell!r} is not a number or (number, spread)") from None
    if not math.isfinite(value_):
        raise InputError(f"a cell {cell!r} is not finite: a verdict needs every value measured")
    if not math.isfinite(spread_):
        spread_ = 0.0
    return value_, abs(spread_)


def _require_percent(values: Iterable[float], what: str) -> None:
    values = list(values)
    if values and all(0.0 <= v <= 1.0 for v in values):
        raise InputError(f"the {what} look like fractions in [0, 1]; pass percent (multiply by 100), "
                           f"the unit of the paper's tables and of the rules' tolerances")


# Student t quantiles t(0.975, df) for df = 1..30 (two-sided 95%); above 30 the normal 1.96.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(df: int) -> float:
    """Two-sided 95% Student t quantile for ``df`` >= 1 degrees of freedom (1.96 above 30)."""
    if df < 1:
        raise InputError(f"a t quantile needs at least 1 degree of freedom, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_ci95_half_width(std: float | None, n: int, episode_ci95: float | None = None) -> float:
    """The spread of a cell (module docstring): 95% CI half-width of a mean over ``n`` seeds.

    ``std``: standard deviation over the seeds (ddof=1), same unit as the mean; ``n``: seeds;
    ``episode_ci95``: the 95% CI half-width over test episodes of the one run, used when ``n`` is 1 or
    ``std`` is missing. Returns ``t975(n - 1) * std / sqrt(n)``, else ``episode_ci95``, else 0.0.
    """
    n = int(n)
    if n >= 2 and std is not None and math.isfinite(float(std)):
        return t975(n - 1) * abs(float(std)) / math.sqrt(n)
    if episode_ci95 is not None and math.isfinite(float(episode_ci95)):
        return abs(float(episode_ci95))
    return 0.0


def difference_noise(spread_a: float, spread_b: float) -> float:
    """95% CI half-width of the difference of two independent means whose own half-widths are the spreads."""
    return math.hypot(spread_a, spread_b)


_noise = difference_noise


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1 else f"{x:.1f}"


def cells_from_records(records: Any, *, key: str | Sequence[str], value: str = "accuracy",
                       spread: str | None = "ci95") -> dict:
    """``{key: (value, spread)}`` from a DataFrame (anything with ``to_dict("records")``) or a list
    of row mappings. ``key``: one column, or several (the dict key is then the tuple of them).
    Example: ``cells_from_records(frame, key="frozen")`` for :func:`verdict_freezing`."""
    rows = records.to_dict("records") if hasattr(records, "to_dict") else list(records)
    keys = (key,) if isinstance(key, str) else tuple(key)
    out: dict = {}
    for row in rows:
        missing = [c for c in (*keys, value) if c not in row]
        if missing:
            raise InputError(f"a row lacks column(s) {', '.join(missing)}; it has {', '.join(map(str, row))}")
        k = row[keys[0]] if len(keys) == 1 else tuple(row[c] for c in keys)
        out[k] = (row[value], row.get(spread) if spread else None)
    return out


def _layer_values(similarity: Mapping[str, Any], measure: str) -> dict[str, float]:
    missing = [layer for layer in (*BODY_LAYERS, "head") if layer not in similarity]
    if missing:
        raise InputError(f"the similarity table lacks {', '.join(missing)}: the paper's claim covers "
                           f"every conv layer and the head")
    if measure.lower() not in CCA_MEASURES + CKA_MEASURES:
        raise InputError(f"unknown measure {measure!r}; the paper's claim is about CCA "
                           f"({', '.join(CCA_MEASURES)}) or CKA ({', '.join(CKA_MEASURES)})")
    return {layer: _cell_value(similarity[layer])[0] for layer in (*BODY_LAYERS, "head")}


def layer_rule(layer: str, measure: str) -> str:
    """Figure 2's rule for one layer, in words: conv layers > 0.9; the head < 0.5 (CCA) or below every
    conv layer (CKA)."""
    if layer != "head":
        return f"{layer} {measure} > {BODY_CCA_ABOVE}"
    return (f"head {measure} < {HEAD_CCA_BELOW}" if measure.lower() in CCA_MEASURES
            else f"head {measure} below every conv layer")


def verdicts_inner_loop_similarity(similarity: Mapping[str, Any], measure: str = "cca") -> dict[str, Judgement]:
    """Figure 2 / Section 3.2.2, layer by layer: {"conv1".."conv4", "head": (verdict, reason)}.

    ``similarity``: {"conv1".."conv4", "head": value} of one measure (all five required), before vs
    after the inner loop. The paper states the claim per layer ("Representations in the body of the
    network (the convolutional layers) are highly similar, with CCA similarity scores of >0.9"; "the
    head ... has a CCA similarity of less than 0.5"), so each layer has its own verdict. CCA-family
    measures (``cca``, ``svcca``, ``pwcca``, ...): each conv layer > 0.9, the head < 0.5, the numbers
    the paper prints. CKA: the paper prints no CKA number ("almost 1" for the body, "much lower" for
    the head), so a conv layer must be > 0.9 and the head below every conv layer.
    """
    values = _layer_values(similarity, measure)
    cca = measure.lower() in CCA_MEASURES
    out = {}
    for layer, value_ in values.items():
        if layer != "head":
            ok = value_ > BODY_CCA_ABOVE
        elif cca:
            ok = value_ < HEAD_CCA_BELOW
        else:
            ok = all(value_ < values[conv] for conv in BODY_LAYERS)
        rule = f"{layer_rule(layer, measure)} (Section 3.2.2)"
        out[layer] = (AGREES if ok else DISAGREES,
                      f"{rule}; {layer} {_fmt(value_)}" + ("" if ok else f" fails '{layer_rule(layer, measure)}'"))
    return out


def verdict_inner_loop_similarity(similarity: Mapping[str, Any], measure: str = "cca") -> Judgement:
    """Figure 2 as one verdict: agrees when every layer of :func:`verdicts_inner_loop_similarity` does."""
    per_layer = verdicts_inner_loop_similarity(similarity, measure)
    values = _layer_values(similarity, measure)
    failing = [layer for layer, (verdict, _) in per_layer.items() if verdict is DISAGREES]
    rule = (f"{measure}: every conv layer > {BODY_CCA_ABOVE} and "
            f"{layer_rule('head', measure).replace(f'head {measure} ', 'head ')} (paper, Section 3.2.2)")
    if failing:
        return DISAGREES, f"{rule}; " + "; ".join(f"{layer} {_fmt(values[layer])} fails" for layer in failing)
    return AGREES, (f"{rule}: conv min {_fmt(min(values[l] for l in BODY_LAYERS))}, head {_fmt(values['head'])}")


def _freezing_problems(accuracy: Mapping[str, Any]) -> tuple[list[str], str]:
    cells = {str(k).strip().lower(): _cell_value(v) for k, v in accuracy.items()}
    if "none" not in cells:
        raise InputError("the freezing table needs the 'none' row (nothing frozen) to compare against")
    if len(cells) < 2:
        raise InputError("the freezing table needs at least one frozen set besides 'none'")
    _require_percent([v for v, _ in cells.values()], "freezing accuracies")
    base, base_spread = cells["none"]
    problems, worst = [], ("", 0.0)
    for name, (acc, spread) in cells.items():
        if name == "none":
            continue
        change = acc - base
        allowed = max(FREEZING_TOLERANCE_POINTS, _noise(base_spread, spread))
        if abs(change) > abs(worst[1]):
            worst = (name, change)
        if abs(change) > allowed + PRINT_EPSILON:
            problems.append(f"{{{name}}} frozen {_fmt(base)} -> {_fmt(acc)} ({change:+.1f} points, "
                            f"allowed ±{allowed:.1f})")
    summary = (f"largest change {worst[1]:+.1f} points ({{{worst[0]}}} frozen)" if worst[0]
               else "no change")
    return problems, summary


def verdict_freezing(accuracy: Mapping[str, Any]) -> Judgement:
    """Table 1: freezing contiguous blocks of layers at test time "does not affect accuracy".

    ``accuracy``: {frozen set name ("none", "1", "1,2", "1,2,3", "1,2,3,4"): cell}, percent.
    Agrees when every frozen set's accuracy is within ``max(1.5 points, sqrt(s_none**2 + s**2))``
    of the "none" row, in either direction (the paper's words, "does not affect" / "hardly
    affects", are two-sided; 1.5 is the paper's own largest change, Table 1 5-shot).
    """
    problems, summary = _freezing_problems(accuracy)
    rule = f"every frozen set within ±max({FREEZING_TOLERANCE_POINTS}, noise) points of none (Table 1)"
    if problems:
        return DISAGREES, f"{rule}; " + "; ".join(problems)
    return AGREES, f"{rule}; {summary}"


def verdict_training_dynamics(checkpoints: Mapping[Any, Mapping[str, Any]],
                              measure: str = "cca") -> Judgement:
    """Figure 3 / Section 3.2.3: at every training checkpoint, freezing contiguous blocks gives
    "almost identical performance" and the body's representations are "highly similar pre/post
    adaptation" ("very high for the body (just like Figure 2)").

    ``checkpoints``: {iteration or label: {"freezing": {frozen set: cell},
    "similarity": {"conv1".."conv4": value} (optional)}}. Each checkpoint's freezing table must
    pass :func:`verdict_freezing`'s rule (two-sided: a rise counts as much as a drop), and, where a
    similarity is given, every conv layer must be > 0.9 with ``measure`` (Figure 2's number for the
    body; the head is not part of this claim). Checkpoint 0 (an untrained network) is refused: the
    paper's earliest checkpoint is iteration 10000.
    """
    if not checkpoints:
        raise InputError("no checkpoints: Figure 3's claim is about checkpoints during training")
    problems = []
    for label, data in checkpoints.items():
        if isinstance(label, (int, float)) and label <= 0:
            raise InputError(f"checkpoint {label!r} is the untrained network; the paper's earliest is "
                               f"iteration 10000 (of training, Section 3.2.3): pass trained checkpoints")
        if "freezing" not in data:
            raise InputError(f"checkpoint {label!r} has no 'freezing' table")
        found, _ = _freezing_problems(data["freezing"])
        problems += [f"checkpoint {label}: {p}" for p in found]
        similarity = data.get("similarity")
        if similarity is not None:
            missing = [layer for layer in BODY_LAYERS if layer not in similarity]
            if missing:
                raise InputError(f"checkpoint {label!r}: the similarity table lacks {', '.join(missing)}")
            low = [f"{layer} {_fmt(_cell_value(similarity[layer])[0])}" for layer in BODY_LAYERS
                   if not _cell_value(similarity[layer])[0] > BODY_CCA_ABOVE]
            if low:
                problems.append(f"checkpoint {label}: {measure} not above {BODY_CCA_ABOVE}: {', '.join(low)}")
    rule = (f"at every checkpoint: frozen sets within ±max({FREEZING_TOLERANCE_POINTS}, noise) points of "
            f"none, body {measure} > {BODY_CCA_ABOVE} (Figure 3)")
    if problems:
        return DISAGREES, f"{rule}; " + "; ".join(problems)
    return AGREES, f"{rule}; {len(checkpoints)} checkpoint(s) checked"


def _pairs(results: Mapping[str, Mapping[str, Any]], candidate: str, references: Sequence[str],
           two_sided: bool = True) -> tuple[list[str], list[str]]:
    """Problems and notes of ``candidate`` vs each reference in every setting: a deficit beyond
    ``max(1.6, noise)`` points, and when ``two_sided`` a surplus beyond ``max(3.0, noise)``."""
    problems, notes = [], []
    if not results:
        raise InputError("no settings in the results table")
    for setting, row in results.items():
        missing = [name for name in (candidate, *references) if name not in row]
        if missing:
            raise InputError(f"setting {setting!r} lacks {', '.join(missing)}")
        cells = {name: _cell_value(row[name]) for name in (candidate, *references)}
        _require_percent([v for v, _ in cells.values()], f"accuracies of {setting}")
        cand, cand_spread = cells[candidate]
        for ref_name in references:
            ref, ref_spread = cells[ref_name]
            noise = _noise(cand_spread, ref_spread)
            below, above = max(COMPARABLE_DEFICIT_POINTS, noise), max(COMPARABLE_SURPLUS_POINTS, noise)
            gap = cand - ref
            notes.append(f"{setting}: {candidate} {_fmt(cand)} vs {ref_name} {_fmt(ref)} ({gap:+.1f})")
            if gap < -below - PRINT_EPSILON:
                problems.append(f"{setting}: {candidate} {_fmt(cand)} is {-gap:.1f} points below {ref_name} "
                                f"{_fmt(ref)} (allowed {below:.1f})")
            elif two_sided and gap > above + PRINT_EPSILON:
                problems.append(f"{setting}: {candidate} {_fmt(cand)} is {gap:.1f} points above {ref_name} "
                                f"{_fmt(ref)} (allowed {above:.1f})")
    return problems, notes


def verdict_anil_matches_maml(results: Mapping[str, Mapping[str, Any]]) -> Judgement:
    """Table 2: "ANIL matches the performance of MAML" (classification accuracy).

    ``results``: {setting: {"MAML": cell, "ANIL": cell}}, percent. Agrees when in every setting
    ANIL - MAML lies within ``[-max(1.6, noise), +max(3.0, noise)]`` points: the paper's own band of
    "comparable" accuracy (:data:`COMPARABLE_DEFICIT_POINTS`, :data:`COMPARABLE_SURPLUS_POINTS`).
    """
    problems, notes = _pairs(results, "ANIL", ("MAML",))
    rule = (f"ANIL - MAML within [-max({COMPARABLE_DEFICIT_POINTS}, noise), +max({COMPARABLE_SURPLUS_POINTS}, "
            f"noise)] points (Table 2)")
    if problems:
        return DISAGREES, f"{rule}; " + "; ".join(problems)
    return AGREES, f"{rule}; " + "; ".join(notes)


def verdict_nil_matches(results: Mapping[str, Mapping[str, Any]]) -> Judgement:
    """Table 4: "NIL performs comparably to MAML and ANIL" ("NIL algorithm performs as well as MAML
    and ANIL", its caption).

    ``results``: {setting: {"MAML": cell, "ANIL": cell, "NIL": cell}}, percent; MAML or ANIL may be
    left out of a setting when it was not run, but at least one must be there. One-sided: agrees
    unless NIL is below MAML or ANIL by more than ``max(1.6, noise)`` points in some setting (the
    paper's largest "comparable" shortfall, :data:`COMPARABLE_DEFICIT_POINTS`). The claim is that
    learned features alone suffice at test time, so a NIL *above* the adapted networks only
    strengthens it; the paper's own NIL is above MAML in three of Table 4's four columns.
    """
    problems, notes = [], []
    for setting, row in results.items():
        refs = tuple(name for name in ("MAML", "ANIL") if name in row)
        if not refs:
            raise InputError(f"setting {setting!r} has neither MAML nor ANIL to compare NIL with")
        found, said = _pairs({setting: row}, "NIL", refs, two_sided=False)
        problems += found
        notes += said
    if not results:
        raise InputError("no settings in the results table")
    rule = (f"NIL not below MAML / ANIL by more than max({COMPARABLE_DEFICIT_POINTS}, noise) points; above "
            f"by any amount agrees (Table 4)")
    if problems:
        return DISAGREES, f"{rule}; " + "; ".join(problems)
    return AGREES, f"{rule}; " + "; ".join(notes)


def verdict_similar_representations(pairs: Mapping[str, Any], measure: str = "cca") -> Judgement:
    """Table 3: ANIL-MAML pairs are about as similar as same-algorithm pairs of different seeds.

    ``pairs``: {"MAML-MAML": cell, "ANIL-ANIL": cell, "ANIL-MAML": cell} (body averages of one
    measure; "MAML-ANIL" is accepted for "ANIL-MAML"). "About as similar" = ANIL-MAML is at least
    ``min(MAML-MAML, ANIL-ANIL) - max(0.03, noise)``: 0.03 is the largest gap the paper calls "the
    same average similarity scores" (CKA 0.83 vs 0.86); a cross-algorithm pair *more* similar than
    the same-algorithm pairs does not contradict "algorithmic differences ... does not result in
    vastly different types of features", so only the shortfall is bounded.
    """
    cells = dict(pairs)
    if "ANIL-MAML" not in cells and "MAML-ANIL" in cells:
        cells["ANIL-MAML"] = cells["MAML-ANIL"]
    missing = [k for k in ("MAML-MAML", "ANIL-ANIL", "ANIL-MAML") if k not in cells]
    if missing:
        raise InputError(f"Table 3 needs MAML-MAML, ANIL-ANIL (different seeds) and ANIL-MAML pairs; "
                           f"missing {', '.join(missing)}")
    same = {k: _cell_value(cells[k]) for k in ("MAML-MAML", "ANIL-ANIL")}
    cross, cross_spread = _cell_value(cells["ANIL-MAML"])
    lowest_name = min(same, key=lambda k: same[k][0])
    lowest, lowest_spread = same[lowest_name]
    allowed = max(SAME_SIMILARITY_TOLERANCE, _noise(cross_spread, lowest_spread))
    shortfall = lowest - cross
    rule = (f"{measure}: ANIL-MAML >= min(MAML-MAML, ANIL-ANIL) - max({SAME_SIMILARITY_TOLERANCE}, noise) "
            f"(Table 3)")
    detail = (f"ANIL-MAML {cross:.3f}, MAML-MAML {same['MAML-MAML'][0]:.3f}, "
              f"ANIL-ANIL {same['ANIL-ANIL'][0]:.3f}")
    if shortfall > allowed + PRINT_EPSILON:
        return DISAGREES, f"{rule}; {detail}: {shortfall:.3f} below {lowest_name} (allowed {allowed:.3f})"
    return AGREES, f"{rule}; {detail}"


LEARNING_CURVES_FROM = 0.5
"""Figure 5's rule judges the iterations from this fraction of the last compared iteration on."""


def verdict_learning_curves(curves: Mapping[Any, Mapping[str, Any]]) -> Judgement:
    """Figure 5: MAML's and ANIL's validation accuracy "look very similar throughout training".

    ``curves``: {iteration: {"MAML": cell, "ANIL": cell}}, percent, at the iterations both were
    evaluated (cells with their spread, the module's noise definition). Judged over the second half of
    training: the iterations at or after :data:`LEARNING_CURVES_FROM` (one half) of the last one given.
    The first half holds the rise from chance, where two curves that reach the same plateau one
    validation interval apart differ by many points at a single step: that says when each network
    learned, not whether the two learn alike, and the paper's words ("look very similar", "behave
    similarly through the training process") are not about single early steps; the second half is where
    both curves have done most of their rise and a systematic gap shows. The figure prints no numbers,
    so the tolerance is Table 2's "comparable" one: ``|ANIL - MAML| <= max(1.6, noise)`` points at every
    judged iteration (two-sided: "very similar").
    """
    if not curves:
        raise InputError("no iterations in the learning curves")
    for iteration, row in curves.items():
        missing = [name for name in ("MAML", "ANIL") if name not in row]
        if missing:
            raise InputError(f"iteration {iteration!r} lacks {', '.join(missing)}")
    start = LEARNING_CURVES_FROM * max(float(i) for i in curves)
    judged = {i: row for i, row in curves.items() if float(i) >= start}
    problems = []
    worst = (None, 0.0)
    for iteration, row in judged.items():
        (maml, s_maml), (anil, s_anil) = _cell_value(row["MAML"]), _cell_value(row["ANIL"])
        _require_percent([maml, anil], f"accuracies at iteration {iteration}")
        gap = anil - maml
        if worst[0] is None or abs(gap) > abs(worst[1]):
            worst = (iteration, gap)
        allowed = max(COMPARABLE_DEFICIT_POINTS, _noise(s_maml, s_anil))
        if abs(gap) > allowed + PRINT_EPSILON:
            problems.append(f"iteration {iteration}: ANIL {_fmt(anil)} vs MAML {_fmt(maml)} ({gap:+.1f}, "
                            f"allowed ±{allowed:.1f})")
    first = min(judged, key=float)
    rule = (f"|ANIL - MAML| <= max({COMPARABLE_DEFICIT_POINTS}, noise) points at every validation from iteration "
            f"{first} on, the second half of training (Figure 5; {len(judged)} of {len(curves)} iterations judged)")
    if problems:
        return DISAGREES, f"{rule}; " + "; ".join(problems)
    return AGREES, f"{rule}; largest gap {worst[1]:+.1f} at iteration {worst[0]}"


def _regime_cells(regimes: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    aliases = {cell.row.lower(): cell.key for cell in load_paper().tables["Table 5"]}   # rows as printed
    cells = {aliases.get(str(k).strip().lower(), str(k).strip().lower()): _cell_value(v)
             for k, v in regimes.items()}
    _require_percent([v for v, _ in cells.values()], "regime accuracies")
    return cells


def verdict_head_needed_at_training(regimes: Mapping[str, Any]) -> Judgement:
    """Table 5 / Section 5.2: "MAML and ANIL training performs best"; "Using NIL during training
    performs worse than MAML/ANIL" -- the head is needed at training.

    ``regimes``: {regime: cell} with keys of repana's regimes ("maml", "anil", "multiclass",
    "multitask", "random", "nil") or Table 5's row names, all evaluated with NIL, percent. Needs
    "nil" and at least one of "maml"/"anil". Agrees when each of MAML and ANIL present is above
    every other regime present by more than the noise ``sqrt(s_a**2 + s_b**2)`` ("superior"; the
    paper's own smallest margin is 8.3 points, 48.0 vs 39.7, 1-shot).
    """
    cells = _regime_cells(regimes)
    heads = [k for k in ("maml", "anil") if k in cells]
    if not heads or "nil" not in cells:
        raise InputError("Table 5's claim needs the NIL-trained body ('nil') and a MAML or ANIL body")
    others = [k for k in cells if k not in ("maml", "anil")]
    problems = []
    for head in heads:
        for other in others:
            margin = cells[head][0] - cells[other][0]
            noise = _noise(cells[head][1], cells[other][1])
            if not margin > noise:
                problems.append(f"{head} {_fmt(cells[head][0])} not above {other} {_fmt(cells[other][0])} "
                                f"beyond noise {noise:.1f}")
    rule = "MAML and ANIL bodies above every other training regime under NIL evaluation (Table 5)"
    if problems:
        return DISAGREES, f"{rule}; " + "; ".join(problems)
    best_other = max(others, key=lambda k: cells[k][0])
    return AGREES, (f"{rule}; lowest of {'/'.join(heads)} {_fmt(min(cells[h][0] for h in heads))} vs best "
                    f"other ({best_other}) {_fmt(cells[best_other][0])}")


def verdict_multitask_below_random(regimes: Mapping[str, Any]) -> Judgement:
    """Section 5.2: "Multitask training ... performs the worst, even worse than random features".

    ``regimes`` as for :func:`verdict_head_needed_at_training`; needs "multitask" and "random".
    Agrees when multitask is below random features by more than the noise and is the lowest regime
    present.
    """
    cells = _regime_cells(regimes)
    if "multitask" not in cells or "random" not in cells:
        raise InputError("this claim needs the 'multitask' and 'random' regimes")
    (multitask, s_mt), (random_, s_rand) = cells["multitask"], cells["random"]
    rule = "multitask below random features beyond noise, and the lowest regime (Section 5.2)"
    problems = []
    if not random_ - multitask > _noise(s_mt, s_rand):
        problems.append(f"multitask {_fmt(multitask)} not below random {_fmt(random_)} beyond noise "
                        f"{_noise(s_mt, s_rand):.1f}")
    lower = [k for k, (v, _) in cells.items() if k != "multitask" and v <= multitask]
    if lower:
        problems.append(f"not the worst: {', '.join(f'{k} {_fmt(cells[k][0])}' for k in lower)} "
                        f"<= multitask {_fmt(multitask)}")
    if problems:
        return DISAGREES, f"{rule}; " + "; ".join(problems)
    return AGREES, f"{rule}; multitask {_fmt(multitask)} vs random {_fmt(random_)}"


def verdict_anil_matches_maml_rl(results: Mapping[str, Mapping[str, Any]]) -> Judgement:
    """Table 2, RL rows: ANIL and MAML "achieve comparable average return (the higher the better)".

    ``results``: {environment: {"MAML": cell, "ANIL": cell}}, average returns after adaptation with their
    spread (95% CI half-width of each mean, :func:`mean_ci95_half_width`). The paper calls every one of its RL pairs comparable, including ANIL 363.2
    vs MAML 170.4 on HalfCheetah-Direction, and in none is ANIL below MAML: in the paper's usage,
    "comparable" return means ANIL is not worse than MAML. Agrees when in every environment
    ANIL - MAML >= -noise, the noise being sqrt(s_a^2 + s_b^2) of the two spreads (returns have no common
    unit across environments, so no fixed tolerance); a surplus of any size agrees.
    """
    if not results:
        raise InputError("no environments in the RL results")
    problems, notes = [], []
    for env, row in results.items():
        missing = [name for name in ("MAML", "ANIL") if name not in row]
        if missing:
            raise InputError(f"environment {env!r} lacks {', '.join(missing)}")
        (anil, anil_spread), (maml, maml_spread) = _cell_value(row["ANIL"]), _cell_value(row["MAML"])
        noise, gap = _noise(anil_spread, maml_spread), anil - maml
        notes.append(f"{env}: ANIL {anil:.1f} vs MAML {maml:.1f} ({gap:+.1f}, noise {noise:.1f})")
        if gap < -noise - PRINT_EPSILON:
            problems.append(f"{env}: ANIL {anil:.1f} is {-gap:.1f} below MAML {maml:.1f} (noise {noise:.1f})")
    rule = "ANIL's return after adaptation not below MAML's by more than the noise sqrt(s_a^2 + s_b^2) (Table 2, RL)"
    if problems:
        return DISAGREES, f"{rule}; " + "; ".join(problems)
    return AGREES, f"{rule}; " + "; ".join(notes)


def verdict_anil_speedup(training_ratio: float, inference_ratio: float) -> Judgement:
    """Section 4: ANIL "significantly speeds up both training and inference" (paper: average 1.7x
    per training iteration, 4.1x per inference iteration, on its own hardware and settings).

    ``*_ratio``: MAML's time divided by ANIL's, measured in the same run. Agrees when both are
    above 1: speed-ups depend on the machine, so the paper's 1.7x / 4.1x are reported beside ours,
    not required.
    """
    train, infer = float(training_ratio), float(inference_ratio)
    if not (math.isfinite(train) and math.isfinite(infer)) or train <= 0 or infer <= 0:
        raise InputError(f"speed-up ratios must be positive numbers, got {training_ratio!r}, {inference_ratio!r}")
    rule = "ANIL faster than MAML in both training and inference (Section 4; paper 1.7x / 4.1x)"
    slower = [f"{what} {ratio:.2f}x" for what, ratio in (("training", train), ("inference", infer))
              if not ratio > 1.0]
    if slower:
        return DISAGREES, f"{rule}; not faster: {', '.join(slower)}"
    return AGREES, f"{rule}; measured {train:.2f}x training, {infer:.2f}x inference"
