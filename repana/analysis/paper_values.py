"""The published numbers and claims of Raghu, Raghu, Bengio & Vinyals, "Rapid Learning or Feature
Reuse? Towards Understanding the Effectiveness of MAML" (ICLR 2020, arXiv 1909.09157), quoted from the
paper's text, each with where it is; and the verdict rules that test a reproduction against them.

Nothing here is recalled: every number and quote was read in the text named by :data:`SOURCE` (the
ICLR 2020 OpenReview submission, main text). ``docs/paper.md`` lists the same values for people.
What that text does not contain (its appendices: training hyperparameters, total iterations, the CCA
variant's details, the speed-up table) is marked "not in the text read", never filled in.

Verdict rules: one pure function per claim, ``verdict_*(table) -> (verdict, reason)`` with verdict
:data:`AGREES` or :data:`DISAGREES` (:class:`Verdict`, whose value is its one rendering). Each encodes
the claim as the paper words it; where the words are qualitative ("hardly affects", "comparable",
"the same") the tolerance is the largest difference the paper itself describes with those words,
named below: the paper's own tables agree with each rule, and no rule is looser than the paper's
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
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, Iterable, Mapping, Sequence

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


# --------------------------------------------------------------------------------------------------
# Where the numbers were read
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """A text of the paper that was read for this module."""

    key: str
    version: str
    address: str
    how_read: str
    page_numbers: str
    lacks: str


SOURCE = Source(
    key="openreview-submission",
    version=("ICLR 2020 submission, double-blind ('Anonymous authors / Paper under double-blind "
             "review'), main text and references, numbered citations (1)-(40); forum "
             "https://openreview.net/forum?id=rkgMkCEtPB, PDF https://openreview.net/pdf?id=rkgMkCEtPB"),
    address=("the ICLR 2020 submission PDF at https://openreview.net/pdf?id=rkgMkCEtPB (main text and "
             "references)"),
    how_read=("every quote below is copied from that text, with its mathematical notation written as plain "
              "text (1.7x, L1, >0.9, 44.2%)"),
    page_numbers=("not visible: the conversion has no page breaks, so no page of the arXiv v2 PDF "
                  "is given; locations are table / figure / section numbers"),
    lacks=("the appendices (A-D): implementation details (Appendix B), CCA details (B.2), 1-shot "
           "training dynamics (B.5), further learning curves and similarities (C.2, C.3), "
           "implementation details of ANIL (C.4), the speed-up table (C.5), head variants (D.1), "
           "regime similarities (D.2), which are in the arXiv v2 / camera-ready version "
           "(https://arxiv.org/abs/1909.09157) and are not quoted here"),
)

ARXIV = "https://arxiv.org/abs/1909.09157"


# --------------------------------------------------------------------------------------------------
# The tables
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PaperValue:
    """One printed cell of one of the paper's tables.

    ``printed`` is the cell exactly as printed; ``value`` and ``spread`` are parsed from it (spread
    None when no ``±`` is printed). ``spread_meaning`` says what the ``±`` is, in the paper's words
    where it says so. ``unit``: "% accuracy", "average return" or "similarity". ``ways``/``shots``
    are None for RL and similarity cells.
    """

    table: str
    row: str
    column: str
    printed: str
    spread_meaning: str
    unit: str
    dataset: str
    ways: int | None
    shots: int | None
    location: str
    key: str = ""

    @property
    def value(self) -> float:
        return _parse_printed(self.printed)[0]

    @property
    def spread(self) -> float | None:
        return _parse_printed(self.printed)[1]


_PRINTED = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:±\s*(\d+(?:\.\d+)?))?\s*$")


def _parse_printed(printed: str) -> tuple[float, float | None]:
    match = _PRINTED.match(printed)
    if match is None:
        raise ValueError(f"cannot parse the printed cell {printed!r}")
    spread = match.group(2)
    return float(match.group(1)), (float(spread) if spread is not None else None)


_SETTING = re.compile(r"^(Omniglot|MiniImageNet)-(\d+)way-(\d+)shot$")


def _cell(table: str, row: str, column: str, printed: str, spread_meaning: str, location: str,
          unit: str = "% accuracy", key: str = "") -> PaperValue:
    setting = _SETTING.match(column)
    if setting:
        dataset, ways, shots = setting.group(1), int(setting.group(2)), int(setting.group(3))
    else:
        dataset, ways, shots = column, None, None
    return PaperValue(table=table, row=row, column=column, printed=printed,
                      spread_meaning=spread_meaning, unit=unit, dataset=dataset, ways=ways,
                      shots=shots, location=location, key=key or row)


MINI_1 = "MiniImageNet-5way-1shot"
MINI_5 = "MiniImageNet-5way-5shot"
OMNI_1 = "Omniglot-20way-1shot"
OMNI_5 = "Omniglot-20way-5shot"

SPREAD_NOT_STATED_SEEDS = ("not stated in the table or its caption; Section 3.2 says of these "
                           "experiments \"Results are averaged over three random seeds.\"")
SPREAD_STD_INITS = ("standard deviation over three random initializations (Section 4: \"The results "
                    "in Table 2 (mean and standard deviation of performance over three random "
                    "initializations)\")")
SPREAD_TABLE4_REPEATED = ("not stated in Table 4 or its caption; the MAML and ANIL rows repeat "
                          "Table 2's cells, whose ± is the standard deviation over three random "
                          "initializations")
SPREAD_NOT_STATED = "not stated in the table, its caption or the text around it"
NO_SPREAD = "none printed"

CAPTIONS: dict[str, str] = {
    "Table 1": (
        "Table 1: Freezing successive layers (preventing inner loop adaptation) does not affect "
        "accuracy, supporting feature reuse. To test the amount of feature reuse happening in the "
        "inner loop adaptation, we test the accuracy of the model when we freeze (prevent inner loop "
        "adaptation) a contiguous block of layers at test time. We find that freezing even all four "
        "convolutional layers of the network (all layers except the network head) hardly affects "
        "accuracy. This strongly supports the feature reuse hypothesis: layers don't have to change "
        "rapidly at adaptation time; they already contain good features from the meta-initialization."),
    "Table 2": (
        "Table 2: ANIL matches the performance of MAML on few-shot image classification and RL. On "
        "benchmark few-shot classification tasks MAML and ANIL have comparable accuracy, and also "
        "comparable average return (the higher the better) on standard RL tasks (6)."),
    "Table 3": (
        "Table 3: MAML and ANIL models learn comparable representations. Comparing CCA/CKA "
        "similarity scores of the of MAML-ANIL representations (averaged over network body), and "
        "MAML-MAML and ANIL-ANIL similarity scores (across different random seeds) shows algorithmic "
        "differences between MAML/ANIL does not result in vastly different types of features learned."),
    "Table 4": (
        "Table 4: NIL algorithm performs as well as MAML and ANIL on few-shot image classification. "
        "Performance of MAML, ANIL, and NIL on few-shot image classification benchmarks. We see that "
        "with no test-time inner loop, and just learned features, NIL performs comparably to MAML and "
        "ANIL, indicating the strength of the learned features, and the relative lack of importance of "
        "the head at test time."),
    "Table 5": (
        "Table 5: MAML/ANIL training leads to superior features learned, supporting importance of head "
        "at training. Training with MAML/ANIL leads to superior performance over other methods which do "
        "not have task specific heads, supporting the importance of the head at training."),
    "Figure 2": (
        "Figure 2: High CCA/CKA similarity between representations before and after adaptation for all "
        "layers except the head. We compute CCA/CKA similarity between the representation of a layer "
        "before the inner loop adaptation and after adaptation. We observe that for all layers except "
        "the head, the CCA/CKA similarity is almost 1, indicating perfect similarity. This suggests that "
        "these layers do not change much during adaptation, but mostly perform feature reuse. Note that "
        "there is a slight dip in similarity in the higher conv layers (e.g. conv3, conv4); this is "
        "likely because the slight representational differences in conv1, conv2 have a compounding "
        "effect on the representations of conv3, conv4. The head of the network must change "
        "significantly during adaptation, and this is reflected in the much lower CCA/CKA similarity."),
    "Figure 3": (
        "Figure 3: Inner loop updates have little effect on learned representations from early on in "
        "learning. Left pane: we freeze contiguous blocks of layers (no adaptation at test time), on "
        "MiniImageNet-5way-5shot and see almost identical performance. Right pane: representations of "
        "all layers except the head are highly similar pre/post adaptation - i.e. features are being "
        "reused. This is true from very early (iteration 10000) in training."),
    "Figure 5": (
        "Figure 5: MAML and ANIL learn very similarly. Loss and accuracy curves for MAML and ANIL on "
        "MiniImageNet-5way-5shot, illustrating how MAML and ANIL behave similarly through the training "
        "process."),
}

_T1 = "Table 1 (printed in Section 3.2, discussed in Section 3.2.1)"
_T2 = "Table 2 (printed after Figure 4, discussed in Section 4, 'Results of ANIL on Standard Benchmarks')"
_T3 = "Table 3 (Section 4, 'MAML and ANIL Models Show Similar Behavior')"
_T4 = "Table 4 (printed in Section 5, discussed in Section 5.1)"
_T5 = "Table 5 (Section 5.2)"

_FREEZE_ROWS = (("None", "none"), ("1", "1"), ("1,2", "1,2"), ("1,2,3", "1,2,3"), ("1,2,3,4", "1,2,3,4"))

TABLE_1 = tuple(
    _cell("Table 1", row, column, printed, SPREAD_NOT_STATED_SEEDS, _T1, key=key)
    for (row, key), column, printed in [
        (_FREEZE_ROWS[0], MINI_1, "44.5 ± 0.8"), (_FREEZE_ROWS[0], MINI_5, "61.7 ± 0.6"),
        (_FREEZE_ROWS[1], MINI_1, "44.8 ± 0.7"), (_FREEZE_ROWS[1], MINI_5, "61.7 ± 0.7"),
        (_FREEZE_ROWS[2], MINI_1, "44.8 ± 0.8"), (_FREEZE_ROWS[2], MINI_5, "61.4 ± 0.7"),
        (_FREEZE_ROWS[3], MINI_1, "44.7 ± 0.8"), (_FREEZE_ROWS[3], MINI_5, "60.2 ± 0.7"),
        (_FREEZE_ROWS[4], MINI_1, "44.7 ± 0.8"), (_FREEZE_ROWS[4], MINI_5, "60.2 ± 0.7"),
    ])

TABLE_2 = tuple(
    [_cell("Table 2", row, column, printed, SPREAD_STD_INITS, _T2, key=row.lower())
     for row, column, printed in [
         ("MAML", OMNI_1, "93.7 ± 0.7"), ("MAML", OMNI_5, "96.4 ± 0.1"),
         ("MAML", MINI_1, "46.9 ± 0.2"), ("MAML", MINI_5, "63.1 ± 0.4"),
         ("ANIL", OMNI_1, "96.2 ± 0.5"), ("ANIL", OMNI_5, "98.0 ± 0.3"),
         ("ANIL", MINI_1, "46.7 ± 0.4"), ("ANIL", MINI_5, "61.5 ± 0.5"),
     ]]
    + [_cell("Table 2", row, column, printed, SPREAD_STD_INITS, _T2, unit="average return",
             key=row.lower())
       for row, column, printed in [
           ("MAML", "HalfCheetah-Direction", "170.4 ± 21.0"), ("ANIL", "HalfCheetah-Direction", "363.2 ± 14.8"),
           ("MAML", "HalfCheetah-Velocity", "-139.0 ± 18.9"), ("ANIL", "HalfCheetah-Velocity", "-120.9 ± 6.3"),
           ("MAML", "2D-Navigation", "-20.3 ± 3.2"), ("ANIL", "2D-Navigation", "-20.1 ± 2.3"),
       ]])

TABLE_3 = tuple(
    _cell("Table 3", row, column, printed, NO_SPREAD, _T3, unit="similarity", key=row)
    for row, column, printed in [
        ("MAML-MAML", "CCA Similarity", "0.51"), ("MAML-MAML", "CKA Similarity", "0.83"),
        ("ANIL-ANIL", "CCA Similarity", "0.51"), ("ANIL-ANIL", "CKA Similarity", "0.86"),
        ("ANIL-MAML", "CCA Similarity", "0.50"), ("ANIL-MAML", "CKA Similarity", "0.83"),
    ])

TABLE_4 = tuple(
    _cell("Table 4", row, column, printed,
          SPREAD_TABLE4_REPEATED if row != "NIL" else SPREAD_NOT_STATED, _T4, key=row.lower())
    for row, column, printed in [
        ("MAML", OMNI_1, "93.7 ± 0.7"), ("MAML", OMNI_5, "96.4 ± 0.1"),
        ("MAML", MINI_1, "46.9 ± 0.2"), ("MAML", MINI_5, "63.1 ± 0.4"),
        ("ANIL", OMNI_1, "96.2 ± 0.5"), ("ANIL", OMNI_5, "98.0 ± 0.3"),
        ("ANIL", MINI_1, "46.7 ± 0.4"), ("ANIL", MINI_5, "61.5 ± 0.5"),
        ("NIL", OMNI_1, "96.7 ± 0.3"), ("NIL", OMNI_5, "98.0 ± 0.04"),
        ("NIL", MINI_1, "48.0 ± 0.7"), ("NIL", MINI_5, "62.2 ± 0.5"),
    ])

# Table 5 rows as printed, with the regime keys repana uses (repana.analysis.regimes.REGIME_ORDER).
TABLE_5_ROWS = (("MAML training-NIL head", "maml"), ("ANIL training-NIL head", "anil"),
                ("Multiclass training-NIL head", "multiclass"), ("Multitask training-NIL head", "multitask"),
                ("Random features-NIL head", "random"), ("NIL training-NIL head", "nil"))

TABLE_5 = tuple(
    _cell("Table 5", row, column, printed, SPREAD_NOT_STATED, _T5, key=key)
    for (row, key), column, printed in [
        (TABLE_5_ROWS[0], MINI_1, "48.4 ± 0.3"), (TABLE_5_ROWS[0], MINI_5, "61.5 ± 0.8"),
        (TABLE_5_ROWS[1], MINI_1, "48.0 ± 0.7"), (TABLE_5_ROWS[1], MINI_5, "62.2 ± 0.5"),
        (TABLE_5_ROWS[2], MINI_1, "39.7 ± 0.3"), (TABLE_5_ROWS[2], MINI_5, "54.4 ± 0.5"),
        (TABLE_5_ROWS[3], MINI_1, "26.5 ± 1.1"), (TABLE_5_ROWS[3], MINI_5, "34.2 ± 3.5"),
        (TABLE_5_ROWS[4], MINI_1, "32.9 ± 0.6"), (TABLE_5_ROWS[4], MINI_5, "43.2 ± 0.5"),
        (TABLE_5_ROWS[5], MINI_1, "38.3 ± 0.6"), (TABLE_5_ROWS[5], MINI_5, "43.0 ± 0.2"),
    ])

TABLES: dict[str, tuple[PaperValue, ...]] = {
    "Table 1": TABLE_1, "Table 2": TABLE_2, "Table 3": TABLE_3, "Table 4": TABLE_4, "Table 5": TABLE_5,
}

# Numbers in the running text (no table): (printed, what, location, verbatim sentence).
TEXT_NUMBERS: tuple[tuple[str, str, str, str], ...] = (
    ("1.7x", "ANIL's average speed-up per training iteration over MAML; what it averages over is not "
     "said in the main text (full results in Appendix C.5, not in the text read)",
     "Section 4, paragraph 'Computational benefit of ANIL'",
     "We found an average speedup of 1.7x per training iteration over MAML and an average speedup of "
     "4.1x per inference iteration. In Appendix C.5 we provide the full results."),
    ("4.1x", "ANIL's average speed-up per inference iteration over MAML (as above)",
     "Section 4, paragraph 'Computational benefit of ANIL'",
     "We found an average speedup of 1.7x per training iteration over MAML and an average speedup of "
     "4.1x per inference iteration. In Appendix C.5 we provide the full results."),
    (">0.9", "CCA similarity before vs after the inner loop of the body (conv) layers, MAML, MiniImageNet",
     "Section 3.2.2 (Figure 2, left pane)",
     "Representations in the body of the network (the convolutional layers) are highly similar, with "
     "CCA similarity scores of >0.9, indicating that the inner loop induces little to no functional "
     "change."),
    ("less than 0.5", "CCA similarity before vs after the inner loop of the head",
     "Section 3.2.2 (Figure 2, left pane)",
     "By contrast, the head of the network, which does change significantly in the inner loop, has a "
     "CCA similarity of less than 0.5."),
    ("10000, 20000, and 30000", "MAML checkpoints (iterations into training) of the training-dynamics "
     "experiment; the total number of training iterations is not in the main text",
     "Section 3.2.3 (Figure 3)",
     "We take MAML models at 10000, 20000, and 30000 iterations into training, perform freezing "
     "experiments (as in Section 3.2.1) and representational similarity experiments (as in Section "
     "3.2.2)."),
    ("three", "random seeds behind Table 1, Figure 2 and Figure 3", "Section 3.2",
     "Results are averaged over three random seeds."),
    ("three", "random initializations behind Table 2's mean ± standard deviation", "Section 4",
     "The results in Table 2 (mean and standard deviation of performance over three random "
     "initializations) show that ANIL matches the performance of MAML on both few-shot classification "
     "(accuracy) and RL (average return, the higher the better), demonstrating that the inner loop "
     "adaptation of the body is unnecessary for learning good features."),
    ("44.2%", "Matching Networks with joint encoding, MiniImageNet-5way-1shot (cited from (37))",
     "Section 6.1",
     "Indeed, in e.g. Matching Networks (37), using joint encoding one reaches 44.2% accuracy on "
     "MiniImageNet-5way-1shot, whereas with independent encoding one obtains 41.2%: a small difference."),
    ("41.2%", "Matching Networks with independent encoding, MiniImageNet-5way-1shot (cited from (37))",
     "Section 6.1",
     "Indeed, in e.g. Matching Networks (37), using joint encoding one reaches 44.2% accuracy on "
     "MiniImageNet-5way-1shot, whereas with independent encoding one obtains 41.2%: a small difference."),
    ("48.24%", "baselines without joint encoding re-implemented by (5), MiniImageNet-5way-1shot",
     "Section 6.1",
     "For instance, in (5), many methods for one shot learning were re-implemented and studied, and "
     "baselines without joint encoding achieved 48.24% accuracy in MiniImageNet-5way-1shot, whilst "
     "other models using joint encoding such as Relation Net (33) achieves very similar accuracy of "
     "49.31% (they also report MAML, at 46.47%)."),
    ("49.31%", "Relation Net as re-implemented by (5), MiniImageNet-5way-1shot", "Section 6.1",
     "... other models using joint encoding such as Relation Net (33) achieves very similar accuracy of "
     "49.31% (they also report MAML, at 46.47%)."),
    ("46.47%", "MAML as re-implemented by (5), MiniImageNet-5way-1shot", "Section 6.1",
     "... (they also report MAML, at 46.47%)."),
)


# --------------------------------------------------------------------------------------------------
# Settings of the experiments, as far as the main text states them
# --------------------------------------------------------------------------------------------------

NOT_IN_TEXT = "not in the text read (the main text points to an appendix that the text read lacks)"

SETTINGS: dict[str, tuple[str, str]] = {
    # name: (what the paper says, where)
    "architecture": ("\"the standard convolutional architecture in (6)\" ((6) = Finn, Abbeel & Levine, "
                     "MAML, ICML 2017); for Table 2 \"using the same model architectures as the "
                     "original MAML authors, for both supervised learning and RL\"", "Sections 3.2 and 4"),
    "dataset of Table 1, Figures 2-3": ("\"We use the MiniImageNet dataset, a popular standard benchmark "
                                        "for few-shot learning\"", "Section 3.2"),
    "seeds": ("\"Results are averaged over three random seeds.\" (Section 3.2); Table 2: \"mean and "
              "standard deviation of performance over three random initializations\" (Section 4)",
              "Sections 3.2 and 4"),
    "layers compared before/after the inner loop": ("conv1-conv4 and the head (Figure 2 caption: "
                                                    "\"all layers except the head\", \"conv3, conv4\", "
                                                    "\"conv1, conv2\")", "Figure 2"),
    "CCA averaging": ("\"We compute CCA similarity between L1, L2, averaging the similarity score across "
                      "different random seeds of the model and different test time tasks. Full details "
                      "are in Appendix B.2\"", "Section 3.2.2"),
    "CCA variant": ("not named in the main text: \"applying Canonical Correlation Analysis (CCA) to the "
                    "latent representations of the network ... For full details, see (26; 23)\", where "
                    "(26) is SVCCA (Raghu et al. 2017) and (23) is Morcos et al. 2018 (projection-"
                    "weighted CCA); the variant used is " + NOT_IN_TEXT, "Section 3.2.2"),
    "Table 3 similarity": ("body average (\"averaged over network body\"); same-algorithm pairs "
                           "\"across different random seeds\"; dataset and CCA variant not stated",
                           "Table 3 caption"),
    "training-dynamics checkpoints": ("MAML models at 10000, 20000 and 30000 iterations; freezing shown "
                                      "on MiniImageNet-5way-5shot, 1-shot in Appendix B.5; total "
                                      "iterations " + NOT_IN_TEXT, "Section 3.2.3, Figure 3"),
    "learning curves": ("loss and accuracy curves of MAML and ANIL on MiniImageNet-5way-5shot (no "
                        "numbers printed)", "Figure 5, Section 4"),
    "NIL": ("\"Train a few-shot learning model with ANIL/MAML algorithm as standard. We use ANIL "
            "training.\" then at test time remove the head and \"compute cosine similarities between its "
            "penultimate layer representation and those of the support set, using these similarities to "
            "weight the support set labels, as in (37).\"", "Section 5.1"),
    "Table 5 evaluation": ("\"After training, we apply the NIL algorithm to evaluate test performance\"; "
                           "MiniImageNet 5-way 1-shot and 5-shot", "Section 5.2, Table 5"),
    "inner-loop steps, learning rates, meta-batch, iterations": (NOT_IN_TEXT + " (Appendix B, C.4)",
                                                                 "Appendix B, C.4"),
    "number of test episodes / tasks": (NOT_IN_TEXT, "Appendix B"),
}


# --------------------------------------------------------------------------------------------------
# The claims, verbatim
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PaperClaim:
    """A claim of the paper: verbatim quotes, where they are, and the verdict rule that tests it."""

    key: str
    location: str
    quotes: tuple[str, ...]
    rule: str

# Quoted by both the classification and the RL claim that ANIL matches MAML.
_ANIL_MATCHES_ABSTRACT = ("ANIL matches MAML's performance on benchmark few-shot image classification and RL and "
                          "offers computational improvements over MAML.")
_TABLE2_RESULTS = ("The results in Table 2 (mean and standard deviation of performance over three random "
                   "initializations) show that ANIL matches the performance of MAML on both few-shot "
                   "classification (accuracy) and RL (average return, the higher the better), demonstrating "
                   "that the inner loop adaptation of the body is unnecessary for learning good features.")

CLAIMS: dict[str, PaperClaim] = {c.key: c for c in (
    PaperClaim("feature_reuse", "Abstract; Section 1 (contributions); Section 3; Section 7", (
        "We investigate this question, via ablation studies and analysis of the latent representations, "
        "finding that feature reuse is the dominant factor.",
        "We perform layer freezing experiments and latent representational analysis of MAML, finding that "
        "feature reuse is the predominant reason for efficient learning.",
        "The results strongly support feature reuse as the predominant factor behind MAML's success.",
        "Through a series of experiments, we found that feature reuse is the dominant component in MAML's "
        "efficacy.",
    ), "verdict_freezing and verdict_inner_loop_similarity together"),
    PaperClaim("freezing", "Table 1 caption; Section 3.2.1", (
        CAPTIONS["Table 1"],
        "Results are shown in Table 1. We observe that even when freezing all layers in the network body, "
        "performance hardly changes.",
    ), "verdict_freezing"),
    PaperClaim("inner_loop_similarity", "Section 3.2.2; Figure 2 caption", (
        "The result is shown in Figure 2, left pane. Representations in the body of the network (the "
        "convolutional layers) are highly similar, with CCA similarity scores of >0.9, indicating that the "
        "inner loop induces little to no functional change. By contrast, the head of the network, which "
        "does change significantly in the inner loop, has a CCA similarity of less than 0.5. To further "
        "validate this, we also compute CKA (Centered Kernel Alignment) (17) (Figure 2 right), another "
        "similarity metric for neural network representations, which illustrates the same pattern.",
        CAPTIONS["Figure 2"],
    ), "verdict_inner_loop_similarity"),
    PaperClaim("training_dynamics", "Section 3.2.3; Figure 3 caption", (
        "Results in Figure 3 show the same patterns from early in training, with CCA similarity between "
        "activations pre and post inner loop update on MiniImageNet-5way-5shot being very high for the "
        "body (just like Figure 2), and similar to Table 1, test accuracy remaining approximately the same "
        "when freezing contiguous subsets of layers, even when freezing all layers of the network body. "
        "This shows that even early on in training, significant feature reuse is taking place, with the "
        "inner loop having minimal effect on learned representations and features.",
        CAPTIONS["Figure 3"],
    ), "verdict_training_dynamics"),
    PaperClaim("anil_matches_maml", "Abstract; Table 2 caption; Section 4; Section 7", (
        _ANIL_MATCHES_ABSTRACT,
        CAPTIONS["Table 2"],
        _TABLE2_RESULTS,
        "ANIL performs identically to MAML on standard benchmark few-shot classification and RL tasks and "
        "offers computational benefits over MAML.",
    ), "verdict_anil_matches_maml"),
    PaperClaim("anil_matches_maml_rl", "Abstract; Table 2 caption; Section 4", (
        _ANIL_MATCHES_ABSTRACT,
        CAPTIONS["Table 2"],
        _TABLE2_RESULTS,
    ), "verdict_anil_matches_maml_rl"),
    PaperClaim("anil_speedup", "Section 4, 'Computational benefit of ANIL'", (
        "Computational benefit of ANIL: As ANIL almost has no inner loop, it significantly speeds up both "
        "training and inference. We found an average speedup of 1.7x per training iteration over MAML and "
        "an average speedup of 4.1x per inference iteration. In Appendix C.5 we provide the full results.",
    ), "verdict_anil_speedup"),
    PaperClaim("learning_curves", "Figure 5 caption; Section 4", (
        CAPTIONS["Figure 5"],
        "To study the behavior of MAML and ANIL models further, we plot learning curves for both "
        "algorithms on MiniImageNet-5way-5shot, Figure 5. We see that loss and accuracy for both "
        "algorithms look very similar throughout training.",
    ), "verdict_learning_curves"),
    PaperClaim("similar_representations", "Table 3 caption; Section 4", (
        CAPTIONS["Table 3"],
        "We observe that MAML-ANIL representations have the same average similarity scores as MAML-MAML "
        "and ANIL-ANIL representations, suggesting both algorithms learn comparable features (removing "
        "the inner loop doesn't change the kinds of features learned.)",
    ), "verdict_similar_representations"),
    PaperClaim("nil_matches", "Abstract; Table 4 caption; Section 5.1", (
        "We further study the precise contributions of the head and body of the network, showing that "
        "performance on the test tasks is entirely determined by the quality of the learned features, and "
        "we can remove even the head of the network (the NIL algorithm).",
        CAPTIONS["Table 4"],
        "The results for the NIL algorithm, following ANIL training, on few-shot classification benchmarks "
        "are given in Table 4. Despite having no network head and no task specific adaptation, NIL "
        "performs comparably to MAML and ANIL.",
    ), "verdict_nil_matches"),
    PaperClaim("head_needed_at_training", "Section 5 (introduction); Section 5.2; Table 5 caption", (
        "We find that MAML/ANIL result in the best representations, demonstrating the importance of the "
        "head during training for feature learning.",
        "After training, we apply the NIL algorithm to evaluate test performance, and quality of features "
        "learned at training. The results are shown in Table 5. MAML and ANIL training performs best.",
        CAPTIONS["Table 5"],
        "Using NIL during training performs worse than MAML/ANIL. These results demonstrate that the head "
        "is important at training to learn good features in the network body.",
    ), "verdict_head_needed_at_training"),
    PaperClaim("multitask_below_random", "Section 1 (contributions); Section 5.2", (
        "We also find that multitask training, a popular baseline with no task specificity, performs worse "
        "than random features.",
        "Multitask training, which has no task specific head, performs the worst, even worse than random "
        "features (adding evidence for the need for task specificity at training to facilitate feature "
        "learning.)",
    ), "verdict_multitask_below_random"),
    PaperClaim("head_needed_at_test", "Section 4 (opening); Section 5 (opening); Section 3.2", (
        "The head requires the inner loop to allow it to align to the different classes in each task.",
        "The head, however, requires inner loop adaptation to enable task specificity.",
        "This means that the head must necessarily change for each task to learn the new alignment, and for "
        "the rapid learning vs feature reuse question, we are primarily interested in the behavior of the "
        "body of the network.",
    ), "verdict_inner_loop_similarity (the head's low similarity)"),
)}


# --------------------------------------------------------------------------------------------------
# Accessors
# --------------------------------------------------------------------------------------------------

def _input_error(message: str) -> Exception:
    from repana.errors import InputError  # stdlib-only module; imported here to keep this one import-free

    return InputError(message)


def table(name: str) -> tuple[PaperValue, ...]:
    """Every printed cell of ``name`` ("Table 1" ... "Table 5"), in the paper's row order."""
    try:
        return TABLES[name]
    except KeyError:
        raise _input_error(f"no table {name!r} is transcribed; choose one of {', '.join(TABLES)}") from None


def value(table_name: str, row: str, column: str) -> PaperValue:
    """The cell of ``table_name`` at ``row`` (as printed or its key, case-insensitive: "None" or
    "none", "MAML training-NIL head" or "maml") and ``column`` (as printed, e.g.
    "MiniImageNet-5way-1shot", "HalfCheetah-Direction", "CKA Similarity"; case-insensitive)."""
    wanted_row, wanted_column = row.strip().lower(), column.strip().lower()
    for cell in table(table_name):
        if wanted_row in (cell.row.lower(), cell.key.lower()) and cell.column.lower() == wanted_column:
            return cell
    rows = sorted({c.row for c in table(table_name)})
    columns = sorted({c.column for c in table(table_name)})
    raise _input_error(f"{table_name} has no cell ({row!r}, {column!r}); rows: {', '.join(rows)}; "
                       f"columns: {', '.join(columns)}")


def claim(key: str) -> PaperClaim:
    """The claim ``key`` (see :data:`CLAIMS`)."""
    try:
        return CLAIMS[key]
    except KeyError:
        raise _input_error(f"no claim {key!r}; choose one of {', '.join(CLAIMS)}") from None


def cite(cell: PaperValue) -> str:
    """One line naming a cell, its printed text, what its ± is and where it is, e.g. for a report."""
    return (f"{cell.printed} ({cell.table}, {cell.row} / {cell.column}; ±: {cell.spread_meaning}; "
            f"{SOURCE.key})")


# --------------------------------------------------------------------------------------------------
# Verdict rules
# --------------------------------------------------------------------------------------------------

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
            raise _input_error(f"a cell {dict(cell)!r} has no value / accuracy / mean / similarity")
        spread = next((cell[k] for k in ("spread", "ci95", "std", "half_width") if k in cell), 0.0)
        value_, spread_ = found, spread
    elif isinstance(cell, (tuple, list)):
        if len(cell) != 2:
            raise _input_error(f"a cell {cell!r} must be (value, spread)")
        value_, spread_ = cell
    else:
        value_, spread_ = cell, 0.0
    try:
        value_ = float(value_)
        spread_ = 0.0 if spread_ is None else float(spread_)
    except (TypeError, ValueError):
        raise _input_error(f"a cell {cell!r} is not a number or (number, spread)") from None
    if not math.isfinite(value_):
        raise _input_error(f"a cell {cell!r} is not finite: a verdict needs every value measured")
    if not math.isfinite(spread_):
        spread_ = 0.0
    return value_, abs(spread_)


def _require_percent(values: Iterable[float], what: str) -> None:
    values = list(values)
    if values and all(0.0 <= v <= 1.0 for v in values):
        raise _input_error(f"the {what} look like fractions in [0, 1]; pass percent (multiply by 100), "
                           f"the unit of the paper's tables and of the rules' tolerances")


# Student t quantiles t(0.975, df) for df = 1..30 (two-sided 95%); above 30 the normal 1.96.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(df: int) -> float:
    """Two-sided 95% Student t quantile for ``df`` >= 1 degrees of freedom (1.96 above 30)."""
    if df < 1:
        raise _input_error(f"a t quantile needs at least 1 degree of freedom, got {df}")
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
            raise _input_error(f"a row lacks column(s) {', '.join(missing)}; it has {', '.join(map(str, row))}")
        k = row[keys[0]] if len(keys) == 1 else tuple(row[c] for c in keys)
        out[k] = (row[value], row.get(spread) if spread else None)
    return out


def _layer_values(similarity: Mapping[str, Any], measure: str) -> dict[str, float]:
    missing = [layer for layer in (*BODY_LAYERS, "head") if layer not in similarity]
    if missing:
        raise _input_error(f"the similarity table lacks {', '.join(missing)}: the paper's claim covers "
                           f"every conv layer and the head")
    if measure.lower() not in CCA_MEASURES + CKA_MEASURES:
        raise _input_error(f"unknown measure {measure!r}; the paper's claim is about CCA "
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
        raise _input_error("the freezing table needs the 'none' row (nothing frozen) to compare against")
    if len(cells) < 2:
        raise _input_error("the freezing table needs at least one frozen set besides 'none'")
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
        raise _input_error("no checkpoints: Figure 3's claim is about checkpoints during training")
    problems = []
    for label, data in checkpoints.items():
        if isinstance(label, (int, float)) and label <= 0:
            raise _input_error(f"checkpoint {label!r} is the untrained network; the paper's earliest is "
                               f"iteration 10000 (of training, Section 3.2.3): pass trained checkpoints")
        if "freezing" not in data:
            raise _input_error(f"checkpoint {label!r} has no 'freezing' table")
        found, _ = _freezing_problems(data["freezing"])
        problems += [f"checkpoint {label}: {p}" for p in found]
        similarity = data.get("similarity")
        if similarity is not None:
            missing = [layer for layer in BODY_LAYERS if layer not in similarity]
            if missing:
                raise _input_error(f"checkpoint {label!r}: the similarity table lacks {', '.join(missing)}")
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
        raise _input_error("no settings in the results table")
    for setting, row in results.items():
        missing = [name for name in (candidate, *references) if name not in row]
        if missing:
            raise _input_error(f"setting {setting!r} lacks {', '.join(missing)}")
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
            raise _input_error(f"setting {setting!r} has neither MAML nor ANIL to compare NIL with")
        found, said = _pairs({setting: row}, "NIL", refs, two_sided=False)
        problems += found
        notes += said
    if not results:
        raise _input_error("no settings in the results table")
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
        raise _input_error(f"Table 3 needs MAML-MAML, ANIL-ANIL (different seeds) and ANIL-MAML pairs; "
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
        raise _input_error("no iterations in the learning curves")
    for iteration, row in curves.items():
        missing = [name for name in ("MAML", "ANIL") if name not in row]
        if missing:
            raise _input_error(f"iteration {iteration!r} lacks {', '.join(missing)}")
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
    aliases = {row.lower(): key for row, key in TABLE_5_ROWS}
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
        raise _input_error("Table 5's claim needs the NIL-trained body ('nil') and a MAML or ANIL body")
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
        raise _input_error("this claim needs the 'multitask' and 'random' regimes")
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


RL_ENVS = {"2d-navigation": "2D-Navigation", "halfcheetah-dir": "HalfCheetah-Direction",
           "halfcheetah-vel": "HalfCheetah-Velocity"}
"""repana.rl environment names -> Table 2's RL column names."""


def rl_cells(env: str) -> dict[str, PaperValue]:
    """{"MAML": cell, "ANIL": cell} of Table 2's RL column of a repana.rl environment (``"2d-navigation"``...)."""
    if env not in RL_ENVS:
        raise _input_error(f"Table 2 has no RL column for environment {env!r}; it has {', '.join(RL_ENVS)}")
    return {c.row: c for c in TABLE_2 if c.column == RL_ENVS[env]}


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
        raise _input_error("no environments in the RL results")
    problems, notes = [], []
    for env, row in results.items():
        missing = [name for name in ("MAML", "ANIL") if name not in row]
        if missing:
            raise _input_error(f"environment {env!r} lacks {', '.join(missing)}")
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
        raise _input_error(f"speed-up ratios must be positive numbers, got {training_ratio!r}, {inference_ratio!r}")
    rule = "ANIL faster than MAML in both training and inference (Section 4; paper 1.7x / 4.1x)"
    slower = [f"{what} {ratio:.2f}x" for what, ratio in (("training", train), ("inference", infer))
              if not ratio > 1.0]
    if slower:
        return DISAGREES, f"{rule}; not faster: {', '.join(slower)}"
    return AGREES, f"{rule}; measured {train:.2f}x training, {infer:.2f}x inference"


# --------------------------------------------------------------------------------------------------
# The paper's own tables in the verdicts' input shapes (used by the tests: the paper must agree
# with its own claims under these rules)
# --------------------------------------------------------------------------------------------------

def paper_cells(table_name: str, column: str) -> dict[str, tuple[float, float | None]]:
    """{row key: (value, spread)} of one column of a table, e.g. ``paper_cells("Table 1", MINI_5)``."""
    cells = {c.key: (c.value, c.spread) for c in table(table_name) if c.column == column}
    if not cells:
        columns = sorted({c.column for c in table(table_name)})
        raise _input_error(f"{table_name} has no column {column!r}; columns: {', '.join(columns)}")
    return cells


def paper_rl_results() -> dict[str, dict[str, tuple[float, float | None]]]:
    """{environment: {"MAML": (value, spread), "ANIL": ...}} of Table 2's RL rows (repana.rl names)."""
    return {env: {row: (c.value, c.spread) for row, c in rl_cells(env).items()} for env in RL_ENVS}


def paper_settings(table_name: str) -> dict[str, dict[str, tuple[float, float | None]]]:
    """{column: {row as printed: (value, spread)}} of Table 2 or 4's accuracy cells."""
    out: dict[str, dict[str, tuple[float, float | None]]] = {}
    for c in table(table_name):
        if c.unit == "% accuracy":
            out.setdefault(c.column, {})[c.row] = (c.value, c.spread)
    return out


# --------------------------------------------------------------------------------------------------
# docs/paper.md
# --------------------------------------------------------------------------------------------------

NOTES: tuple[str, ...] = (
    "**Version.** The text read is the double-blind ICLR 2020 submission (OpenReview), not the arXiv v2 "
    "camera-ready; no other full copy of the tables was reachable. The issue's numbers for Tables 1-5 and "
    "Table 2's RL rows match this text cell for cell. Page numbers of the arXiv v2 PDF could not be seen.",
    "**What the ± are.** Only Table 2's are described: \"mean and standard deviation of performance over "
    "three random initializations\" (Section 4); Table 4 repeats those MAML/ANIL cells. Tables 1 and 5 and "
    "Table 4's NIL row print ± without saying what they are; Section 3.2 says Table 1's experiments are "
    "\"averaged over three random seeds\". None is a 95% confidence interval over episodes by the text.",
    "**Table 1 vs Table 2.** Table 1's no-freezing row (44.5 / 61.7) is not Table 2's MAML (46.9 / 63.1): "
    "separate runs. Freezing changes 5-way 1-shot accuracy by at most +0.3 points and 5-way 5-shot by at "
    "most -1.5 ({1,2,3} and {1,2,3,4}), which the paper calls \"hardly affects accuracy\".",
    "**Table 3** has six cells only: body averages (\"averaged over network body\") of CCA and CKA for "
    "MAML-MAML, ANIL-ANIL (\"across different random seeds\") and ANIL-MAML. No per-layer values, no "
    "spread, no dataset named in the table or its paragraph (the neighbouring Figure 5 is "
    "MiniImageNet-5way-5shot). The CCA variant is not named in the main text: it cites SVCCA (26) and "
    "Morcos et al. (23) and defers to Appendix B.2, which the text read lacks.",
    "**Figure 2.** The numbers \">0.9\" (every conv layer) and \"less than 0.5\" (head) are stated for "
    "CCA (left pane). For CKA the paper says only that it \"illustrates the same pattern\" and, in the "
    "caption, \"almost 1\" for all layers except the head and \"much lower\" for the head; the caption also "
    "notes \"a slight dip in similarity in the higher conv layers (e.g. conv3, conv4)\".",
    "**Figure 3.** Checkpoints at 10000, 20000 and 30000 iterations; freezing on MiniImageNet-5way-5shot "
    "(1-shot in Appendix B.5). The total number of training iterations (the issue's 60k) is not in the main "
    "text read, so the fractions 1/6, 1/3, 1/2 cannot be confirmed here. The claim is two-sided: \"almost "
    "identical performance\", \"approximately the same\".",
    "**Speed-ups.** \"We found an average speedup of 1.7x per training iteration over MAML and an average "
    "speedup of 4.1x per inference iteration. In Appendix C.5 we provide the full results.\" Nothing ties "
    "them to MiniImageNet 5-way 1-shot; what they average over (benchmarks, step settings) is in Appendix "
    "C.5, not in the text read. Likewise the inner-loop steps, learning rates and meta-batch sizes "
    "(Appendix B, C.4) are not in the text read.",
    "**Table 5** is MiniImageNet 5-way 1-shot and 5-shot, every body evaluated with NIL. The order is not "
    "the same in both columns: 1-shot MAML 48.4 > ANIL 48.0 > multiclass 39.7 > NIL-training 38.3 > random "
    "32.9 > multitask 26.5; 5-shot ANIL 62.2 > MAML 61.5 > multiclass 54.4 > random 43.2 > NIL-training "
    "43.0 > multitask 34.2.",
    "**Rules and the paper's own tables.** A rule \"within the printed ± (or the episode CI)\" would reject "
    "the paper's own Table 1 (5-shot: -1.5 points against ± 0.6 / 0.7) and Table 2 (5-shot: ANIL 1.6 "
    "points below MAML against ± 0.5 / 0.4). The verdicts therefore take as tolerance the largest "
    "difference the paper itself describes with its words (1.5 points \"hardly affects\"; 1.6 points "
    "below to 3.0 points above \"matches\"/\"comparable\"; 0.03 \"the same\" similarity), plus the "
    "reproduction's own noise. By the same band the issue's quick run (MAML 69.6, ANIL 75.1) does not agree "
    "with \"ANIL matches MAML\": ANIL 5.5 points above is outside what the paper calls comparable.",
)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def paper_markdown() -> str:
    """The text of ``docs/paper.md``: every quoted number with where it is and the source address."""
    lines = ["# The paper's numbers, quoted", "",
             "Raghu, Raghu, Bengio & Vinyals, \"Rapid Learning or Feature Reuse? Towards Understanding the "
             f"Effectiveness of MAML\", ICLR 2020 ({ARXIV}).", "",
             "Generated from `repana/analysis/paper_values.py` (`paper_markdown()`); edit the module, not "
             "this page. Nothing here is recalled: every number was read in the source below.", "",
             "## Source", "",
             f"- Version: {SOURCE.version}.", f"- Read in: {SOURCE.address}.",
             f"- How: {SOURCE.how_read}.",
             f"- Pages: {SOURCE.page_numbers}.", f"- Not in the text read: {SOURCE.lacks}.", "",
             "## Notes (where the issue differs from the text)", ""]
    lines += [f"{i}. {note}" for i, note in enumerate(NOTES, 1)]
    for name, cells in TABLES.items():
        lines += ["", f"## {name}", "", f"Where: {cells[0].location}.", "",
                  f"> {_md_escape(CAPTIONS[name])}", ""]
        columns = list(dict.fromkeys(c.column for c in cells))
        rows = list(dict.fromkeys(c.row for c in cells))
        grid = {(c.row, c.column): c.printed for c in cells}
        lines += ["| " + " | ".join(["row", *columns]) + " |", "|" + " --- |" * (len(columns) + 1)]
        lines += ["| " + " | ".join([row, *(grid.get((row, col), "") for col in columns)]) + " |" for row in rows]
        by_meaning: dict[str, list[str]] = {}
        for c in cells:
            rows_of = by_meaning.setdefault(c.spread_meaning, [])
            if c.row not in rows_of:
                rows_of.append(c.row)
        if len(by_meaning) == 1:
            spreads = next(iter(by_meaning))
        else:
            spreads = "; ".join(f"{', '.join(r)}: {m}" for m, r in by_meaning.items())
        units = ", ".join(dict.fromkeys(c.unit for c in cells))
        lines += ["", f"Unit: {units}. ±: {spreads}"]
    lines += ["", "## Numbers in the text", "", "| printed | what | where | sentence |", "| --- | --- | --- | --- |"]
    lines += [f"| {_md_escape(n)} | {_md_escape(w)} | {_md_escape(loc)} | {_md_escape(q)} |"
              for n, w, loc, q in TEXT_NUMBERS]
    lines += ["", "## Figures without printed numbers", ""]
    lines += [f"- **{name}** > {CAPTIONS[name]}" for name in ("Figure 2", "Figure 3", "Figure 5")]
    lines += ["", "## Settings stated in the main text", "", "| setting | what the paper says | where |",
              "| --- | --- | --- |"]
    lines += [f"| {_md_escape(k)} | {_md_escape(v)} | {_md_escape(w)} |" for k, (v, w) in SETTINGS.items()]
    lines += ["", "## Claims and the verdict rules", "",
              f"Each rule returns (\"{AGREES}\" | \"{DISAGREES}\", reason). Tolerances: "
              f"each conv layer CCA > {BODY_CCA_ABOVE}, head CCA < {HEAD_CCA_BELOW} (one verdict per layer); "
              f"freezing ±{FREEZING_TOLERANCE_POINTS} points; ANIL vs MAML from -{COMPARABLE_DEFICIT_POINTS} to "
              f"+{COMPARABLE_SURPLUS_POINTS} points; NIL not below MAML or ANIL by more than "
              f"{COMPARABLE_DEFICIT_POINTS} points (above by any amount agrees); learning curves within "
              f"±{COMPARABLE_DEFICIT_POINTS} points at every validation of the second half of training; RL "
              f"returns: ANIL not below MAML by more than the noise; Table 3 shortfall {SAME_SIMILARITY_TOLERANCE}; "
              "each widened to the reproduction's noise when that is larger.", "",
              "The noise: each cell's spread is the 95% confidence-interval half-width of its mean, "
              "t(0.975, n-1) x std / sqrt(n) over n >= 2 seeds (std with ddof=1; each seed's value is a mean "
              "over test episodes, so the spread between seeds holds the episode noise too), or the one run's "
              "95% CI over test episodes when there is one seed (the spread between initialisations is then not "
              "counted). Two cells differ beyond noise when their difference exceeds sqrt(s_a^2 + s_b^2), the "
              "95% CI half-width of a difference of two independent means (conservative for two networks "
              "measured on the same episodes). With 2 seeds t(0.975, 1) = 12.706: the noise of a 2-seed mean "
              "is 9.0 x its std over seeds, so 2-seed verdicts can only reject large differences.", ""]
    for claim_ in CLAIMS.values():
        lines += [f"### {claim_.key} ({claim_.location}) -> `{claim_.rule}`", ""]
        lines += [f"> {_md_escape(q)}" + "\n" for q in claim_.quotes]
    return "\n".join(lines).rstrip() + "\n"
