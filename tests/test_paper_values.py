"""The paper's numbers as transcribed, the checks of their data files, and the verdict rules on made-up tables
that must agree and must not.

The transcription tests repeat the printed cells on purpose: an accidental edit of a published number
(repana/analysis/paper/*.toml) must fail here. The source is the ICLR 2020 submission text named in
``paper_values.SOURCE``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from repana.analysis import paper_data, paper_rules, paper_values as pv
from repana.errors import ConfigError, InputError

AGREES, DISAGREES = pv.AGREES, pv.DISAGREES


# ---- transcription ----------------------------------------------------------------------------

def printed(table: str) -> list[tuple[str, str, str]]:
    return [(c.row, c.column, c.printed) for c in pv.table(table)]


def test_table_1_as_printed():
    one = {c.row: c.printed for c in pv.TABLE_1 if c.column == pv.MINI_1}
    five = {c.row: c.printed for c in pv.TABLE_1 if c.column == pv.MINI_5}
    assert one == {"None": "44.5 ± 0.8", "1": "44.8 ± 0.7", "1,2": "44.8 ± 0.8", "1,2,3": "44.7 ± 0.8",
                   "1,2,3,4": "44.7 ± 0.8"}
    assert five == {"None": "61.7 ± 0.6", "1": "61.7 ± 0.7", "1,2": "61.4 ± 0.7", "1,2,3": "60.2 ± 0.7",
                    "1,2,3,4": "60.2 ± 0.7"}
    assert [c.key for c in pv.TABLE_1 if c.column == pv.MINI_1] == ["none", "1", "1,2", "1,2,3", "1,2,3,4"]


def test_table_2_as_printed_with_rl_rows_and_std_over_three_initialisations():
    cells = {(c.row, c.column): c for c in pv.TABLE_2}
    assert {k: c.printed for k, c in cells.items() if c.unit == "% accuracy"} == {
        ("MAML", pv.OMNI_1): "93.7 ± 0.7", ("MAML", pv.OMNI_5): "96.4 ± 0.1",
        ("MAML", pv.MINI_1): "46.9 ± 0.2", ("MAML", pv.MINI_5): "63.1 ± 0.4",
        ("ANIL", pv.OMNI_1): "96.2 ± 0.5", ("ANIL", pv.OMNI_5): "98.0 ± 0.3",
        ("ANIL", pv.MINI_1): "46.7 ± 0.4", ("ANIL", pv.MINI_5): "61.5 ± 0.5"}
    rl = {k: (c.value, c.spread) for k, c in cells.items() if c.unit == "average return"}
    assert rl == {("MAML", "HalfCheetah-Direction"): (170.4, 21.0), ("ANIL", "HalfCheetah-Direction"): (363.2, 14.8),
                  ("MAML", "HalfCheetah-Velocity"): (-139.0, 18.9), ("ANIL", "HalfCheetah-Velocity"): (-120.9, 6.3),
                  ("MAML", "2D-Navigation"): (-20.3, 3.2), ("ANIL", "2D-Navigation"): (-20.1, 2.3)}
    assert all("standard deviation over three random initializations" in c.spread_meaning for c in pv.TABLE_2)


def test_table_3_every_cell_body_average_without_spread():
    assert printed("Table 3") == [
        ("MAML-MAML", "CCA Similarity", "0.51"), ("MAML-MAML", "CKA Similarity", "0.83"),
        ("ANIL-ANIL", "CCA Similarity", "0.51"), ("ANIL-ANIL", "CKA Similarity", "0.86"),
        ("ANIL-MAML", "CCA Similarity", "0.50"), ("ANIL-MAML", "CKA Similarity", "0.83")]
    assert all(c.spread is None for c in pv.TABLE_3)
    assert "averaged over network body" in pv.CAPTIONS["Table 3"]


def test_table_4_nil_row_and_repeated_rows():
    nil = {c.column: c.printed for c in pv.TABLE_4 if c.row == "NIL"}
    assert nil == {pv.OMNI_1: "96.7 ± 0.3", pv.OMNI_5: "98.0 ± 0.04", pv.MINI_1: "48.0 ± 0.7",
                   pv.MINI_5: "62.2 ± 0.5"}
    # The paper prints Table 2's MAML / ANIL cells again in Table 4.
    table2 = {(c.row, c.column): c.printed for c in pv.TABLE_2 if c.unit == "% accuracy"}
    assert {(c.row, c.column): c.printed for c in pv.TABLE_4 if c.row != "NIL"} == table2


def test_table_5_rows_settings_and_consistency_with_table_4():
    one = {c.key: c.value for c in pv.TABLE_5 if c.column == pv.MINI_1}
    five = {c.key: c.value for c in pv.TABLE_5 if c.column == pv.MINI_5}
    assert one == {"maml": 48.4, "anil": 48.0, "multiclass": 39.7, "multitask": 26.5, "random": 32.9, "nil": 38.3}
    assert five == {"maml": 61.5, "anil": 62.2, "multiclass": 54.4, "multitask": 34.2, "random": 43.2, "nil": 43.0}
    assert pv.value("Table 5", "Multitask training-NIL head", pv.MINI_5).printed == "34.2 ± 3.5"
    # "ANIL training-NIL head" is Table 4's NIL row (NIL after ANIL training, Section 5.1).
    for column in (pv.MINI_1, pv.MINI_5):
        assert pv.value("Table 5", "anil", column).printed == pv.value("Table 4", "NIL", column).printed


def test_every_cell_says_where_it_is_and_what_its_spread_is():
    for name, cells in pv.TABLES.items():
        for cell in cells:
            assert cell.location.startswith(name)
            assert cell.spread_meaning and cell.unit
            assert ("±" in cell.printed) == (cell.spread is not None)
            assert float(cell.printed.split("±")[0]) == cell.value
            if cell.unit == "% accuracy":
                assert cell.dataset in ("Omniglot", "MiniImageNet") and cell.ways in (5, 20) and cell.shots in (1, 5)
    assert set(pv.CAPTIONS) >= {"Table 1", "Table 2", "Table 3", "Table 4", "Table 5", "Figure 2", "Figure 3", "Figure 5"}
    assert "https://openreview.net/forum?id=rkgMkCEtPB" in pv.SOURCE.address
    assert pv.ARXIV == "https://arxiv.org/abs/1909.09157"
    assert pv.OPENREVIEW == "https://openreview.net/forum?id=rkgMkCEtPB"


def test_text_numbers_and_claims_are_quoted_with_locations():
    sentences = {n.printed: (n.location, n.sentence) for n in pv.TEXT_NUMBERS}
    assert "average speedup of 1.7x per training iteration" in sentences["1.7x"][1]
    assert "4.1x per inference iteration" in sentences["4.1x"][1]
    assert "CCA similarity scores of >0.9" in sentences[">0.9"][1]
    assert "less than 0.5" in sentences["less than 0.5"][1]
    assert "10000, 20000, and 30000 iterations" in sentences["10000, 20000, and 30000"][1]
    for n in pv.TEXT_NUMBERS:
        assert n.printed.rstrip("x%").lstrip(">") in n.sentence or n.printed == "three" and "three" in n.sentence
        assert n.location.startswith("Section")
    for key, claim in pv.CLAIMS.items():
        assert claim.quotes and claim.location and claim.rule
        rule_name = claim.rule.split()[0]
        assert callable(getattr(paper_rules, rule_name)) and getattr(pv, rule_name) is getattr(paper_rules, rule_name)
    assert pv.CLAIMS["freezing"].quotes[0] == pv.CAPTIONS["Table 1"]    # a caption quoted by name in claims.toml
    # the rules' thresholds are the numbers the text prints
    assert {n.printed for n in pv.TEXT_NUMBERS} >= {f">{pv.BODY_CCA_ABOVE}", f"less than {pv.HEAD_CCA_BELOW}"}


def test_accessors_name_what_exists():
    assert pv.value("Table 1", "none", "miniimagenet-5way-5shot").value == 61.7
    assert pv.value("Table 3", "ANIL-MAML", "CKA Similarity").value == 0.83
    with pytest.raises(InputError, match="rows: .*columns"):
        pv.value("Table 1", "1,3", pv.MINI_1)
    with pytest.raises(InputError, match="Table 1"):
        pv.table("Table 9")
    with pytest.raises(InputError, match="feature_reuse"):
        pv.claim("nope")
    assert "44.5 ± 0.8" in pv.cite(pv.value("Table 1", "None", pv.MINI_1))


def test_module_imports_only_the_standard_library():
    code = ("import sys; import repana.analysis.paper_values; "
            "print(sorted(m for m in ('numpy', 'pandas', 'torch', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- the data files ------------------------------------------------------------------------------

def test_data_files_are_found_through_importlib_resources_and_loaded_read_only():
    from dataclasses import FrozenInstanceError
    from importlib import resources

    from repana.resources import paper_files

    files = paper_files()
    assert sorted(files) == ["claims.toml", "figures.toml", "source.toml", "tables.toml", "text.toml"]
    folder = resources.files("repana.analysis").joinpath("paper")
    assert all(files[name].read_bytes() == folder.joinpath(name).read_bytes() for name in files)
    paper = paper_data.load_paper()
    assert paper is pv.PAPER is paper_data.load_paper()     # read once
    with pytest.raises(FrozenInstanceError):
        pv.TABLE_1[0].printed = "99.9"
    with pytest.raises(TypeError):
        pv.TABLES["Table 9"] = ()
    assert [(c.value, c.spread) for c in pv.TABLE_3[:2]] == [(0.51, None), (0.83, None)]


def _load_edited(tmp_path, monkeypatch, name: str, old: str, new: str) -> None:
    """Load the data files with one text edit in ``name`` (the edit must apply exactly once)."""
    from repana.resources import paper_files

    files = {}
    for file_name, original in paper_files().items():
        text = original.read_text(encoding="utf-8")
        if file_name == name:
            assert text.count(old) == 1, (name, old)
            text = text.replace(old, new)
        files[file_name] = tmp_path / file_name
        files[file_name].write_text(text, encoding="utf-8")
    monkeypatch.setattr(paper_data, "paper_files", lambda: files)
    paper_data.load_paper.__wrapped__()


@pytest.mark.parametrize("name, old, new, message", [
    ("tables.toml", '{ name = "HalfCheetah-Direction", unit = "average return" }',
     '{ name = "HalfCheetah-Direction", unit = "returns" }',
     "tables.toml, table 'Table 2', column 5: unknown unit 'returns'"),
    ("tables.toml", '"44.5 ± 0.8"', '"nan ± 0.8"',
     "tables.toml, table 'Table 1', row 'None', column 'MiniImageNet-5way-1shot': cannot parse the printed cell"),
    ("tables.toml", '"0.51", "0.83"', '"0.51 ± 0.02", "0.83"',
     "table 'Table 3', row 'MAML-MAML', column 'CCA Similarity': '0.51 ± 0.02' prints ± but the row's ± meaning "
     "is 'none'"),
    ("tables.toml", 'key = "none", spread = "seeds_not_stated"', 'key = "none", spread = "std_over_seeds"',
     "table 'Table 1', row 'None': the meaning of its ± 'std_over_seeds' is not in [spreads]"),
    ("tables.toml", '["44.5 ± 0.8", "61.7 ± 0.6"]', '["44.5 ± 0.8"]', "row 'None': 1 cells for 2 columns"),
    ("tables.toml", 'name = "Table 1"\n', 'name = "Table 1"\npage = 3\n',
     "tables.toml, table 1: unknown key(s) page"),
    ("tables.toml", 'location = "Table 5 (Section 5.2)"', 'location = "Section 5.2"',
     "table 'Table 5': its location must start with its name"),
    ("tables.toml", 'location = "Table 5 (Section 5.2)"', 'location = "Table 5 (Section 5.2); page 7"',
     "location part 'page 7'"),
    ("source.toml", 'venue = "ICLR 2020"', "venue = 2020", "source.toml, [paper]: venue must be str, got int"),
    ("source.toml", 'arxiv = "https://arxiv.org/abs/1909.09157"', 'arxiv = "1909.09157"',
     "arxiv must be an address starting with https://arxiv.org/abs/"),
    ("claims.toml", 'rule = "verdict_freezing"\n', "", "claims.toml, claim 2: missing key(s) rule"),
    ("claims.toml", 'caption = "Table 1"', 'caption = "Table 9"',
     "claims.toml, claim 'freezing', quote 1: no caption of 'Table 9'"),
    ("text.toml", 'location = "Section 3.2.3 (Figure 3)"', 'location = "Section 3.2.3; the third figure"',
     "text.toml, number '10000, 20000, and 30000': location part 'the third figure'"),
    ("figures.toml", "[[figure]]\nname = \"Figure 5\"", "[[figure]\nname = \"Figure 5\"",
     "figures.toml is not valid TOML"),
])
def test_a_broken_data_file_names_the_file_the_entry_and_the_problem(tmp_path, monkeypatch, name, old, new, message):
    with pytest.raises(ConfigError) as raised:
        _load_edited(tmp_path, monkeypatch, name, old, new)
    assert message in str(raised.value)


# ---- the paper agrees with its own claims under these rules ---------------------------------------

@pytest.mark.parametrize("column", [pv.MINI_1, pv.MINI_5])
def test_paper_table_1_agrees_with_its_freezing_claim(column):
    verdict, reason = pv.verdict_freezing(pv.paper_cells("Table 1", column))
    assert verdict == AGREES, reason


def test_paper_tables_2_to_5_agree_with_their_claims():
    assert pv.verdict_anil_matches_maml(pv.paper_settings("Table 2"))[0] == AGREES
    assert pv.verdict_nil_matches(pv.paper_settings("Table 4"))[0] == AGREES
    for measure in ("CCA Similarity", "CKA Similarity"):
        pairs = {c.row: c.value for c in pv.TABLE_3 if c.column == measure}
        assert pv.verdict_similar_representations(pairs, measure)[0] == AGREES
    for column in (pv.MINI_1, pv.MINI_5):
        assert pv.verdict_head_needed_at_training(pv.paper_cells("Table 5", column))[0] == AGREES
        assert pv.verdict_multitask_below_random(pv.paper_cells("Table 5", column))[0] == AGREES
    assert pv.verdict_anil_speedup(1.7, 4.1)[0] == AGREES


def test_tolerances_are_the_papers_own_largest_differences():
    five = pv.paper_cells("Table 1", pv.MINI_5)
    assert max(abs(v - five["none"][0]) for v, _ in five.values()) == pytest.approx(pv.FREEZING_TOLERANCE_POINTS)
    table2 = pv.paper_settings("Table 2")
    assert max(s["MAML"][0] - s["ANIL"][0] for s in table2.values()) == pytest.approx(pv.COMPARABLE_DEFICIT_POINTS)
    table4 = pv.paper_settings("Table 4")
    surplus = max(s[c][0] - s[r][0] for s in [*table2.values(), *table4.values()]
                  for c, r in (("ANIL", "MAML"), ("NIL", "MAML"), ("NIL", "ANIL")) if c in s)
    assert surplus == pytest.approx(pv.COMPARABLE_SURPLUS_POINTS)
    cka = {c.row: c.value for c in pv.TABLE_3 if c.column == "CKA Similarity"}
    assert cka["ANIL-ANIL"] - cka["ANIL-MAML"] == pytest.approx(pv.SAME_SIMILARITY_TOLERANCE)


# ---- Figure 2 -----------------------------------------------------------------------------------

def test_figure_2_svcca_conv4_0866_head_0570_does_not_agree():
    verdict, reason = pv.verdict_inner_loop_similarity(
        {"conv1": 0.991, "conv2": 0.982, "conv3": 0.951, "conv4": 0.866, "head": 0.570}, "svcca")
    assert verdict == DISAGREES
    assert "conv4 0.866" in reason and "head 0.57" in reason


def test_figure_2_agrees_only_when_every_conv_layer_is_above_09_and_head_below_05():
    good = {"conv1": 0.99, "conv2": 0.98, "conv3": 0.95, "conv4": 0.91, "head": 0.42}
    assert pv.verdict_inner_loop_similarity(good, "cca")[0] == AGREES
    assert pv.verdict_inner_loop_similarity({**good, "conv4": 0.9}, "cca")[0] == DISAGREES  # "> 0.9", strictly
    assert pv.verdict_inner_loop_similarity({**good, "head": 0.5}, "pwcca")[0] == DISAGREES
    assert pv.verdict_inner_loop_similarity({**good, "conv1": 0.85}, "cca")[0] == DISAGREES


def test_figure_2_cka_needs_body_above_09_and_the_head_lowest():
    good = {"conv1": 0.99, "conv2": 0.98, "conv3": 0.95, "conv4": 0.93, "head": 0.7}
    assert pv.verdict_inner_loop_similarity(good, "cka")[0] == AGREES
    assert pv.verdict_inner_loop_similarity({**good, "head": 0.97}, "cka_debiased")[0] == DISAGREES
    assert pv.verdict_inner_loop_similarity({**good, "conv3": 0.88}, "cka")[0] == DISAGREES


def test_figure_2_per_layer_says_which_layers_agree():
    """The issue's quick run: conv1-3 above 0.9, conv4 0.851, head 0.553 with SVCCA."""
    per_layer = pv.verdicts_inner_loop_similarity(
        {"conv1": 0.99, "conv2": 0.97, "conv3": 0.93, "conv4": 0.851, "head": 0.553}, "svcca")
    assert {layer: v for layer, (v, _) in per_layer.items()} == {
        "conv1": AGREES, "conv2": AGREES, "conv3": AGREES, "conv4": DISAGREES, "head": DISAGREES}
    assert "conv4 0.851 fails 'conv4 svcca > 0.9'" in per_layer["conv4"][1]
    assert "head 0.553 fails 'head svcca < 0.5'" in per_layer["head"][1]
    cka = pv.verdicts_inner_loop_similarity({"conv1": 0.99, "conv2": 0.97, "conv3": 0.95, "conv4": 0.6,
                                             "head": 0.7}, "cka")
    assert cka["conv4"][0] == DISAGREES and cka["head"][0] == DISAGREES and cka["conv3"][0] == AGREES
    assert "below every conv layer" in cka["head"][1]


def test_figure_2_refuses_a_table_without_conv4_or_head_and_unknown_measures():
    with pytest.raises(InputError, match="conv4"):
        pv.verdict_inner_loop_similarity({"conv1": 1.0, "conv2": 1.0, "conv3": 1.0, "head": 0.1})
    with pytest.raises(InputError, match="measure"):
        pv.verdict_inner_loop_similarity({"conv1": 1, "conv2": 1, "conv3": 1, "conv4": 1, "head": 0}, "rsa")


# ---- Table 1 and Figure 3 -----------------------------------------------------------------------

def test_freezing_drop_beyond_tolerance_and_noise_does_not_agree():
    table = {"none": (70.0, 0.5), "1": (69.8, 0.5), "1,2": (69.0, 0.5), "1,2,3": (67.0, 0.5), "1,2,3,4": (66.0, 0.5)}
    verdict, reason = pv.verdict_freezing(table)
    assert verdict == DISAGREES and "{1,2,3} frozen" in reason and "{1,2,3,4} frozen" in reason


def test_freezing_rise_counts_as_much_as_a_drop():
    assert pv.verdict_freezing({"none": (50.0, 0.4), "1,2,3,4": (54.0, 0.4)})[0] == DISAGREES


def test_freezing_change_within_wide_episode_noise_agrees_and_within_tolerance_agrees():
    assert pv.verdict_freezing({"none": (60.0, 2.0), "1,2,3,4": (57.5, 2.0)})[0] == AGREES  # noise 2.83
    assert pv.verdict_freezing({"none": (60.0, 0.1), "1,2,3,4": (58.6, 0.1)})[0] == AGREES  # 1.4 <= 1.5
    assert pv.verdict_freezing({"none": (60.0, 0.1), "1,2,3,4": (58.4, 0.1)})[0] == DISAGREES


def test_freezing_reads_a_dataframe_of_fractions_only_after_conversion():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"frozen": ["none", "1", "1,2"], "accuracy": [0.61, 0.60, 0.60], "ci95": [0.01] * 3})
    with pytest.raises(InputError, match="fractions"):
        pv.verdict_freezing(pv.cells_from_records(frame, key="frozen"))
    frame = frame.assign(accuracy=frame.accuracy * 100, ci95=frame.ci95 * 100)
    assert pv.verdict_freezing(pv.cells_from_records(frame, key="frozen"))[0] == AGREES
    with pytest.raises(InputError, match="none"):
        pv.verdict_freezing({"1": 50.0, "1,2": 51.0})


@pytest.mark.parametrize("shift", [-20.0, 0.0, 15.5])
def test_freezing_verdict_does_not_depend_on_the_accuracy_level(shift):
    table = {"none": (50.0, 0.3), "1": (49.5, 0.3), "1,2,3,4": (47.0, 0.3)}
    moved = {k: (v + shift, s) for k, (v, s) in table.items()}
    assert pv.verdict_freezing(moved)[0] == pv.verdict_freezing(table)[0] == DISAGREES


@settings(max_examples=60, deadline=None)
@given(base=st.floats(20, 80), changes=st.lists(st.floats(-5, 5), min_size=1, max_size=4),
       spread=st.floats(0, 3))
def test_freezing_agrees_exactly_when_every_change_is_within_the_allowance(base, changes, spread):
    table = {"none": (base, spread)}
    table.update({",".join(map(str, range(1, i + 2))): (base + c, spread) for i, c in enumerate(changes)})
    allowed = max(pv.FREEZING_TOLERANCE_POINTS, (2 * spread ** 2) ** 0.5)
    within = all(abs(v - base) <= allowed + 1e-9 for v, _ in table.values())
    assert (pv.verdict_freezing(table)[0] == AGREES) == within


def test_training_dynamics_rise_at_the_earliest_checkpoint_does_not_agree():
    """The issue's measurement: freezing all conv blocks raised accuracy 23.3 -> 33.4 early on."""
    checkpoints = {
        500: {"freezing": {"none": (23.3, 1.0), "1": (24.0, 1.0), "1,2,3,4": (33.4, 1.0)}},
        3000: {"freezing": {"none": (60.0, 1.0), "1,2,3,4": (59.5, 1.0)},
               "similarity": {"conv1": 0.99, "conv2": 0.98, "conv3": 0.96, "conv4": 0.93}},
    }
    verdict, reason = pv.verdict_training_dynamics(checkpoints)
    assert verdict == DISAGREES and "checkpoint 500" in reason and "checkpoint 3000" not in reason


def test_training_dynamics_agrees_when_every_checkpoint_reuses_features():
    good = {"freezing": {"none": (40.0, 0.8), "1": (40.2, 0.8), "1,2": (39.9, 0.8), "1,2,3": (39.5, 0.8),
                         "1,2,3,4": (39.2, 0.8)},
            "similarity": {"conv1": 0.99, "conv2": 0.97, "conv3": 0.95, "conv4": 0.92, "head": 0.3}}
    assert pv.verdict_training_dynamics({10000: good, 20000: good, 30000: good})[0] == AGREES
    low = {**good, "similarity": {**good["similarity"], "conv4": 0.8}}
    verdict, reason = pv.verdict_training_dynamics({10000: low, 20000: good})
    assert verdict == DISAGREES and "checkpoint 10000" in reason and "conv4 0.8" in reason


def test_training_dynamics_refuses_the_untrained_network():
    with pytest.raises(InputError, match="untrained"):
        pv.verdict_training_dynamics({0: {"freezing": {"none": 20.0, "1": 20.0}}})


# ---- Tables 2 and 4, Figure 5 -------------------------------------------------------------------

def test_anil_far_from_maml_either_way_does_not_agree():
    below = {"Omniglot-5way-1shot": {"MAML": (87.5, 0.8), "ANIL": (75.1, 0.9)}}
    verdict, reason = pv.verdict_anil_matches_maml(below)
    assert verdict == DISAGREES and "12.4 points below MAML" in reason
    # The quick run: an undertrained MAML 5.5 points under ANIL is not "comparable" either.
    above = {"Omniglot-5way-1shot": {"MAML": (69.6, 0.9), "ANIL": (75.1, 0.9)}}
    verdict, reason = pv.verdict_anil_matches_maml(above)
    assert verdict == DISAGREES and "5.5 points above MAML" in reason
    close = {"Omniglot-5way-1shot": {"MAML": (87.5, 0.6), "ANIL": (87.2, 0.6)},
             "Omniglot-20way-1shot": {"MAML": (80.0, 0.5), "ANIL": (82.9, 0.5)}}
    assert pv.verdict_anil_matches_maml(close)[0] == AGREES


def test_nil_below_either_reference_does_not_agree():
    results = {"MiniImageNet-5way-1shot": {"MAML": 47.0, "ANIL": 46.5, "NIL": 44.0}}
    verdict, reason = pv.verdict_nil_matches(results)
    assert verdict == DISAGREES and "below MAML" in reason and "below ANIL" in reason
    assert pv.verdict_nil_matches({"x": {"ANIL": 75.1, "NIL": 77.0}})[0] == AGREES
    # a deficit of exactly 1.6 points (the paper's largest "comparable" one) agrees, 1.7 does not
    assert pv.verdict_nil_matches({"x": {"MAML": 60.0, "NIL": 58.4}})[0] == AGREES
    verdict, reason = pv.verdict_nil_matches({"x": {"MAML": 60.0, "NIL": 58.3}})
    assert verdict == DISAGREES and "1.7 points below MAML" in reason
    # ... unless the noise is wider: hypot(1.5, 2.0) = 2.5
    assert pv.verdict_nil_matches({"x": {"MAML": (60.0, 1.5), "NIL": (57.6, 2.0)}})[0] == AGREES
    with pytest.raises(InputError, match="neither MAML nor ANIL"):
        pv.verdict_nil_matches({"x": {"NIL": 81.0}})


def test_nil_better_than_maml_and_anil_agrees_by_any_margin():
    """Table 4's claim is one-sided: the issue's quick run (NIL 85.4 vs MAML 80.2, ANIL 80.5) agrees."""
    verdict, reason = pv.verdict_nil_matches({"omniglot-5way-1shot": {"MAML": (80.2, 0.9), "ANIL": (80.5, 0.9),
                                                                      "NIL": (85.4, 0.8)}})
    assert verdict == AGREES and "NIL 85.4 vs MAML 80.2 (+5.2)" in reason
    assert pv.verdict_nil_matches({"x": {"ANIL": 75.1, "NIL": 95.0}})[0] == AGREES
    # ANIL vs MAML stays two-sided: "matches" bounds a surplus too
    assert pv.verdict_anil_matches_maml({"x": {"MAML": 75.1, "ANIL": 95.0}})[0] == DISAGREES


def test_learning_curves_judge_the_second_half_of_training_only():
    close = {1000: {"MAML": (40.0, 1.0), "ANIL": (40.8, 1.0)}, 2000: {"MAML": (55.0, 1.0), "ANIL": (54.2, 1.0)}}
    verdict, reason = pv.verdict_learning_curves(close)
    assert verdict == AGREES and "from iteration 1000 on" in reason
    apart = {**close, 3000: {"MAML": (60.0, 0.5), "ANIL": (65.0, 0.5)}}
    verdict, reason = pv.verdict_learning_curves(apart)
    assert verdict == DISAGREES and "iteration 3000" in reason
    # An early gap (ANIL learns first, both reach the same plateau) is outside the judged half.
    early = {200: {"MAML": (30.0, 1.0), "ANIL": (60.0, 1.0)}, 400: {"MAML": (50.0, 1.0), "ANIL": (70.0, 1.0)},
             600: {"MAML": (74.0, 1.0), "ANIL": (75.0, 1.0)}, 800: {"MAML": (76.0, 1.0), "ANIL": (75.5, 1.0)},
             1000: {"MAML": (76.0, 1.0), "ANIL": (76.5, 1.0)}}
    verdict, reason = pv.verdict_learning_curves(early)
    assert verdict == AGREES and "from iteration 600 on" in reason and "3 of 5 iterations judged" in reason
    # ... but the same gap at iteration 600 is judged, and fails
    late = {**early, 600: {"MAML": (60.0, 1.0), "ANIL": (75.0, 1.0)}}
    verdict, reason = pv.verdict_learning_curves(late)
    assert verdict == DISAGREES and "iteration 600: ANIL 75.0 vs MAML 60.0" in reason and "iteration 400" not in reason


# ---- Table 3 ------------------------------------------------------------------------------------

def test_table_3_cross_pairs_much_less_similar_do_not_agree():
    verdict, reason = pv.verdict_similar_representations(
        {"MAML-MAML": 0.51, "ANIL-ANIL": 0.52, "MAML-ANIL": 0.40}, "cca")
    assert verdict == DISAGREES and "0.110 below MAML-MAML" in reason
    assert pv.verdict_similar_representations({"MAML-MAML": 0.51, "ANIL-ANIL": 0.52, "ANIL-MAML": 0.49})[0] == AGREES
    assert pv.verdict_similar_representations({"MAML-MAML": 0.51, "ANIL-ANIL": 0.52, "ANIL-MAML": 0.47})[0] == DISAGREES
    # Seed-pair spread widens the allowance: 0.04 short with spreads of 0.03 each (noise 0.042).
    noisy = {"MAML-MAML": (0.51, 0.03), "ANIL-ANIL": (0.52, 0.03), "ANIL-MAML": (0.47, 0.03)}
    assert pv.verdict_similar_representations(noisy)[0] == AGREES
    with pytest.raises(InputError, match="MAML-MAML"):
        pv.verdict_similar_representations({"ANIL-MAML": 0.5, "ANIL-ANIL": 0.5})


# ---- Table 5 ------------------------------------------------------------------------------------

def test_multiclass_body_beating_maml_under_nil_does_not_agree():
    regimes = {"maml": (70.0, 1.0), "anil": (76.0, 1.0), "multiclass": (80.0, 1.0), "multitask": (40.0, 1.0),
               "random": (45.0, 1.0), "nil": (60.0, 1.0)}
    verdict, reason = pv.verdict_head_needed_at_training(regimes)
    assert verdict == DISAGREES and "maml 70.0 not above multiclass 80.0" in reason


def test_head_needed_needs_a_margin_beyond_noise_and_the_nil_trained_body():
    assert pv.verdict_head_needed_at_training({"anil": (75.0, 0.5), "nil": (70.0, 0.5)})[0] == AGREES
    assert pv.verdict_head_needed_at_training({"anil": (75.0, 2.0), "nil": (73.0, 2.0)})[0] == DISAGREES
    assert pv.verdict_head_needed_at_training({"ANIL training-NIL head": 75.0, "NIL training-NIL head": 60.0})[0] == AGREES
    with pytest.raises(InputError, match="nil"):
        pv.verdict_head_needed_at_training({"maml": 70.0, "anil": 71.0})


def test_multitask_must_be_the_worst_and_below_random():
    assert pv.verdict_multitask_below_random({"maml": 70.0, "random": 45.0, "multitask": 40.0})[0] == AGREES
    verdict, reason = pv.verdict_multitask_below_random({"maml": 70.0, "random": 45.0, "multitask": 52.0})
    assert verdict == DISAGREES and "not below random" in reason
    verdict, reason = pv.verdict_multitask_below_random({"nil": 30.0, "random": 45.0, "multitask": 40.0})
    assert verdict == DISAGREES and "not the worst" in reason


def test_speedup_requires_both_faster():
    assert pv.verdict_anil_speedup(4.89, 3.99)[0] == AGREES
    verdict, reason = pv.verdict_anil_speedup(0.95, 3.0)
    assert verdict == DISAGREES and "training 0.95x" in reason
    with pytest.raises(InputError):
        pv.verdict_anil_speedup(float("nan"), 2.0)


def test_docs_paper_md_is_the_rendering_of_the_module():
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "paper.md"
    assert doc.read_text(encoding="utf-8") == pv.paper_markdown(), (
        "docs/paper.md is stale: regenerate it with python -c \"from repana.analysis.paper_values import "
        "paper_markdown; open('docs/paper.md', 'w').write(paper_markdown())\"")
    for cell in (c for cells in pv.TABLES.values() for c in cells):
        assert cell.printed in doc.read_text(encoding="utf-8")


def test_rl_rows_agree_with_their_claim_and_a_deficit_beyond_the_noise_does_not():
    results = pv.paper_rl_results()
    assert results["halfcheetah-dir"] == {"MAML": (170.4, 21.0), "ANIL": (363.2, 14.8)}
    assert results["2d-navigation"] == {"MAML": (-20.3, 3.2), "ANIL": (-20.1, 2.3)}
    verdict, reason = pv.verdict_anil_matches_maml_rl(results)
    assert verdict == AGREES and "halfcheetah-dir: ANIL 363.2 vs MAML 170.4 (+192.8, noise 25.7)" in reason
    # noise = hypot(3, 4) = 5: a deficit of exactly 5 agrees, of 5.2 does not
    assert pv.verdict_anil_matches_maml_rl({"2d-navigation": {"MAML": (-10.0, 3.0), "ANIL": (-15.0, 4.0)}})[0] == AGREES
    verdict, reason = pv.verdict_anil_matches_maml_rl({"2d-navigation": {"MAML": (-10.0, 3.0), "ANIL": (-15.2, 4.0)}})
    assert verdict == pv.DISAGREES and "ANIL -15.2 is 5.2 below MAML -10.0 (noise 5.0)" in reason
    with pytest.raises(InputError, match="lacks ANIL"):
        pv.verdict_anil_matches_maml_rl({"2d-navigation": {"MAML": (-10.0, 3.0)}})
    with pytest.raises(InputError, match="no RL column for environment 'ant'"):
        pv.rl_cells("ant")


# ---- the noise, the verdicts' spelling and the unit at the boundary ------------------------------

def test_noise_is_the_95_ci_half_width_of_each_mean():
    # 2 seeds with accuracies 80 and 82: std 1.414, half-width t(0.975, 1) * std / sqrt(2) = 12.706
    assert pv.mean_ci95_half_width(2 ** 0.5, 2) == pytest.approx(12.706)
    assert pv.mean_ci95_half_width(1.0, 3, episode_ci95=0.5) == pytest.approx(4.303 / 3 ** 0.5)
    # one seed: the run's episode CI; nothing known: 0
    assert pv.mean_ci95_half_width(float("nan"), 1, episode_ci95=0.8) == 0.8
    assert pv.mean_ci95_half_width(None, 1) == 0.0
    assert pv.t975(200) == 1.96
    assert pv.difference_noise(3.0, 4.0) == 5.0
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in range(1, 31):
        assert pv.t975(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=6e-4)


def test_judged_cell_turns_fractions_into_percent_with_the_documented_noise():
    pd = pytest.importorskip("pandas")
    from repana.analysis.report import judged_cell, over_seeds

    frame = pd.DataFrame({"label": "MAML", "seed": [0, 1], "accuracy": [0.80, 0.82], "ci95": [0.02, 0.03]})
    row = over_seeds(frame, ["label"]).iloc[0]
    assert judged_cell(row) == pytest.approx((81.0, 100 * pv.mean_ci95_half_width(0.02 ** 0.5 * 0.1, 2)))
    assert judged_cell(row)[1] == pytest.approx(12.706)
    one = over_seeds(frame[frame.seed == 0], ["label"]).iloc[0]
    assert judged_cell(one) == pytest.approx((80.0, 2.0))      # one seed: the episode CI, in percent
    assert judged_cell(one, scale=1.0) == pytest.approx((0.80, 0.02))


def test_one_spelling_of_the_verdicts_everywhere():
    from repana.analysis import registry

    assert registry.DISAGREES is pv.DISAGREES is pv.Verdict("does not agree")
    assert registry.AGREES is pv.AGREES and registry.NO_VERDICT is pv.NO_VERDICT
    assert str(pv.DISAGREES) == f"{pv.DISAGREES}" == "does not agree"
    finding = registry.Finding.judged(pv.verdict_anil_speedup(0.9, 2.0), claim="ANIL faster", location="Section 4",
                                      paper="1.7x", ours="0.9x")
    assert finding.verdict is pv.DISAGREES and str(finding).endswith("-> **does not agree**.")
    assert finding.reason.startswith("ANIL faster than MAML") and finding.claim == "ANIL faster"
    assert registry.Finding("x", "agrees").verdict is pv.AGREES
    with pytest.raises(ValueError):
        registry.Finding("x", "does NOT agree")
