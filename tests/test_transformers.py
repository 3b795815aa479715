"""Transformers end to end: token layouts named, structured outputs, dict batches, integer token ids, globs
that skip modules that did not run; torch.nn.TransformerEncoder always, Hugging Face `transformers` when
installed (tiny randomly initialised BERT / GPT-2 built from a config: nothing is downloaded)."""

import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from repana.capture import Capture, select_output
from repana.compare import Comparison
from repana.errors import InputError
from repana.similarity import cka, reduce_activations, reduce_conv

pytestmark = pytest.mark.filterwarnings("ignore::repana.similarity.RepanaWarning")


def encoder(seed: int, batch_first: bool = True) -> nn.TransformerEncoder:
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=batch_first)
    return nn.TransformerEncoder(layer, num_layers=3, enable_nested_tensor=False).eval()


@pytest.fixture
def tokens():
    return torch.randn(40, 12, 32, generator=torch.Generator().manual_seed(0))


def test_encoder_layers_are_sequences_and_compare_with_the_token_layout(tokens):
    model = encoder(0)
    acts = Capture(layers=["layers.?"], batch_size=16).run(model, tokens)
    assert list(acts) == ["layers.0", "layers.1", "layers.2"]
    assert acts.layouts == {name: "sequence" for name in acts}
    with torch.no_grad():
        torch.testing.assert_close(acts["layers.2"], model(tokens))
    frame = Comparison(measures=["cka"], reduction="tokens").activations(acts)
    values = frame.set_index(["layer_a", "layer_b"])["value"]
    for name in acts:
        assert values[(name, name)] == pytest.approx(1.0, abs=1e-10)
    assert set(frame["n_datapoints"]) == {40 * 12} and set(frame["reduction"]) == {"tokens"}
    # consecutive layers of a random encoder: related, not identical (measured 0.960 and 0.967)
    for a, b in [("layers.0", "layers.1"), ("layers.1", "layers.2")]:
        assert 0.2 < values[(a, b)] < 0.99
        assert values[(a, b)] == pytest.approx(cka(acts[a].reshape(-1, 32), acts[b].reshape(-1, 32)), rel=1e-12)
    # each sequence reduction means what it says
    mean = Comparison(measures=["cka"], reduction="mean").activations(acts).set_index(["layer_a", "layer_b"])["value"]
    assert mean[("layers.0", "layers.1")] == pytest.approx(cka(acts["layers.0"].mean(1), acts["layers.1"].mean(1)),
                                                          rel=1e-12)
    first = Comparison(measures=["cka"], reduction="first").activations(acts).set_index(["layer_a", "layer_b"])["value"]
    assert first[("layers.0", "layers.1")] == pytest.approx(cka(acts["layers.0"][:, 0], acts["layers.1"][:, 0]),
                                                           rel=1e-12)


def test_the_old_silent_wrong_reduction_of_token_sequences_is_refused(tokens):
    acts = Capture(layers=["layers.0", "layers.1"]).run(encoder(0), tokens)
    plain = {name: value for name, value in acts.items()}  # a plain dict: no layouts
    # Before: reduction="mean" averaged over the hidden size (12 "features"; CKA -0.002 measured on a model).
    with pytest.raises(InputError, match=r"shape \(40, 12, 32\).*layout='conv' or layout='sequence'"):
        Comparison(measures=["cka"], reduction="mean").activations(plain)
    with pytest.raises(InputError, match="conv maps .* or token sequences"):
        reduce_conv(plain["layers.0"], "mean")
    with pytest.raises(InputError, match=r"'positions' does not apply .*sequence layout.*'tokens' \(n\*T, D\)"):
        Comparison(measures=["cka"], reduction="positions").activations(acts)
    with pytest.raises(InputError, match=r"choose reduction='tokens' \(n\*T, D\), 'mean' \(n, D\), 'first'"):
        Comparison(measures=["cka"]).activations(acts)
    named = Comparison(measures=["cka"], reduction="mean", layout="sequence").activations(plain)
    assert named["n_features_a"].tolist() == [32] * 4
    assert reduce_activations(plain["layers.0"], "sequence", "mean").shape == (40, 32)
    with pytest.raises(InputError, match=r"not a token sequence \(n, T, D\)"):
        reduce_activations(torch.zeros(4, 3, 2, 2), "sequence", "mean")
    with pytest.raises(InputError, match="unknown layout"):
        reduce_activations(plain["layers.0"], "tokens", "mean")


def test_max_positions_keeps_random_tokens_of_sequences(tokens):
    model = encoder(0)
    full = Capture(layers=["layers.0"]).run(model, tokens)
    sub = Capture(layers=["layers.0"], max_positions=5, seed=2, batch_size=16).run(model, tokens)
    assert sub["layers.0"].shape == (40, 5, 32)
    kept = [next(t for t in range(12) if torch.allclose(full["layers.0"][:, t], sub["layers.0"][:, i])) for i in range(5)]
    assert kept == sorted(kept) and len(set(kept)) == 5
    with pytest.raises(InputError, match="conv map .* or a token sequence"):
        Capture(layers=["0"], max_positions=5).run(nn.Sequential(nn.Identity()), tokens)
    named = Capture(layers=["0"], max_positions=5, layout="sequence").run(nn.Sequential(nn.Identity()), tokens)
    assert named["0"].shape == (40, 5, 32) and named.layouts == {"0": "sequence"}


def test_sequence_first_modules_are_recorded_batch_first(tokens):
    first, last = encoder(0, batch_first=False), encoder(0, batch_first=True)
    last.load_state_dict(first.state_dict())
    acts = Capture(layers=["layers.1"], batch_size=None).run(first, tokens.transpose(0, 1))
    assert acts["layers.1"].shape == (40, 12, 32)
    torch.testing.assert_close(acts["layers.1"], Capture(layers=["layers.1"]).run(last, tokens)["layers.1"],
                               rtol=1e-5, atol=1e-5)


def test_globs_skip_modules_that_did_not_run_and_exact_names_say_which_ran(tokens):
    model = encoder(0)
    # self_attn.out_proj's weights are used by the attention function, the module itself never runs
    acts = Capture(layers=["layers.0.self_attn*"]).run(model, tokens)
    assert list(acts) == ["layers.0.self_attn"]
    with pytest.raises(InputError, match=r"'layers.0.self_attn.out_proj' did not run .* the modules that ran are: "
                                         r"layers.0, layers.0.self_attn, layers.0.linear1"):
        Capture(layers=["layers.0", "layers.0.self_attn.out_proj"]).run(model, tokens)


class TupleBlock(nn.Module):
    def forward(self, x):
        return x * 2, x + 1


class DictModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.block = TupleBlock()

    def forward(self, input_ids, attention_mask=None, scale=1.0):
        hidden = self.embed(input_ids) * scale
        doubled, shifted = self.block(hidden)
        return {"last": doubled, "all": (hidden, doubled), "mask": attention_mask}


def test_dict_batches_integer_ids_and_output_selectors():
    ids = torch.randint(0, 50, (30, 5), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones(30, 5, dtype=torch.long)}
    model = DictModel()
    with pytest.warns(UserWarning, match=r"module 'block' returned a tuple of 2 elements; recording element 0"):
        acts = Capture(layers=["embed", "block"], batch_size=7, outputs=["last", "all[1]"],
                       forward_kwargs={"scale": 3.0}).run(model, batch)
    hidden = model.embed(ids).detach() * 3.0
    torch.testing.assert_close(acts["embed"], hidden / 3.0)
    torch.testing.assert_close(acts["block"], hidden * 2)
    torch.testing.assert_close(acts["last"], hidden * 2)
    torch.testing.assert_close(acts["all[1]"], hidden * 2)
    assert acts.layouts["embed"] == "sequence" and acts.layouts["block"] is None
    chosen = Capture(layers=["block"], output={"block": 1}, max_datapoints=9, seed=3).run(model, batch)
    rows = [int(torch.nonzero((ids == ids[i]).all(dim=1))[0]) for i in range(30)]
    assert chosen["block"].shape == (9, 5, 8) and len(set(rows)) == 30
    assert select_output({"a": (torch.ones(1), torch.zeros(2))}, "a[-1]").shape == (2,)
    with pytest.raises(InputError, match=r"has no field 'hidden' .* its fields are: last, all, mask"):
        Capture(outputs=["hidden"]).run(model, batch)
    with pytest.raises(InputError, match="gives a NoneType, not a tensor"):
        Capture(outputs=["mask"]).run(model, {"input_ids": ids})
    with pytest.raises(InputError, match=r"same length along dim 0"):
        Capture(layers=["embed"]).run(model, {"input_ids": ids, "attention_mask": torch.ones(29, 5)})
    with pytest.raises(InputError, match=r"DictModel cannot run on the inputs \(shape \(30, 5\) float32\)"):
        Capture(layers=["embed"]).run(model, ids.float())


@pytest.fixture
def transformers():
    return pytest.importorskip("transformers")


def tiny_bert(transformers, seed: int, initializer_range: float = 0.02, **options):
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=32,
                                     initializer_range=initializer_range, **options)
    torch.manual_seed(seed)
    return transformers.BertModel(config).eval()


@pytest.fixture
def bert_batch():
    generator = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(0, 100, (48, 16), generator=generator),
            "attention_mask": torch.ones(48, 16, dtype=torch.long)}


def test_bert_layers_hidden_states_and_token_layout(transformers, bert_batch):
    model = tiny_bert(transformers, 0)
    acts = Capture(layers=["encoder.layer.?"], batch_size=16, outputs=["hidden_states[1]", "last_hidden_state"],
                   forward_kwargs={"output_hidden_states": True}).run(model, bert_batch)
    assert list(acts) == ["encoder.layer.0", "encoder.layer.1", "encoder.layer.2", "hidden_states[1]",
                          "last_hidden_state"]
    assert set(acts.layouts.values()) == {"sequence"}
    torch.testing.assert_close(acts["hidden_states[1]"], acts["encoder.layer.0"])
    torch.testing.assert_close(acts["last_hidden_state"], acts["encoder.layer.2"])
    frame = Comparison(measures=["cka"], reduction="tokens").activations(acts)
    values = frame.set_index(["layer_a", "layer_b"])["value"]
    for name in ["encoder.layer.0", "encoder.layer.1", "encoder.layer.2"]:
        assert values[(name, name)] == pytest.approx(1.0, abs=1e-10)
    # BERT's residual stream at its default init (0.02): consecutive layers nearly equal (measured 0.99996)
    for a, b in [("encoder.layer.0", "encoder.layer.1"), ("encoder.layer.1", "encoder.layer.2")]:
        assert 0.2 < values[(a, b)] < 1.0 - 1e-6


def test_two_berts_and_a_gpt2_through_a_comparison_of_models(transformers, bert_batch):
    frame = Comparison(measures=["cka"], reduction="first").models(
        tiny_bert(transformers, 0, 0.2), tiny_bert(transformers, 1, 0.2), bert_batch,
        Capture(layers=["embeddings", "encoder.layer.?"], batch_size=24))
    diagonal = frame[frame.layer_a == frame.layer_b].set_index("layer_a")["value"]
    assert list(diagonal.index) == ["embeddings", "encoder.layer.0", "encoder.layer.1", "encoder.layer.2"]
    assert (diagonal < 0.95).all() and set(frame["n_datapoints"]) == {48}
    # attention probabilities (n, heads, T, T) of a transformer: 4-D but not a conv map
    probs = Capture(outputs=["attentions[0]"], forward_kwargs={"output_attentions": True}).run(
        tiny_bert(transformers, 0, attn_implementation="eager"), bert_batch)
    assert probs["attentions[0]"].shape == (48, 4, 16, 16) and probs.layouts == {"attentions[0]": "unknown"}
    with pytest.raises(InputError, match=r"does not say what the dimensions are .* layout='conv'"):
        Comparison(measures=["cka"], reduction="mean").activations(probs)
    gpt2 = transformers.GPT2Model(transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4,
                                                          n_positions=32, bos_token_id=0, eos_token_id=0)).eval()
    acts = Capture(layers=["h.*"], batch_size=48).run(gpt2, bert_batch)  # glob: submodules that did not run skipped
    assert acts["h.1"].shape == (48, 16, 32) and acts.layouts["h.1"] == "sequence"
    same = Comparison(measures=["cka"], reduction="tokens", layout="sequence").activations(
        {k: acts[k] for k in ["h.0", "h.1"]})  # a plain dict does not carry the layouts
    assert same["value"].tolist()[0] == pytest.approx(1.0, abs=1e-10)


README_HEADING = "## Compare two transformers layer by layer"
EXAMPLE = textwrap.dedent('''\
    import torch
    from transformers import BertConfig, BertModel

    from repana.capture import Capture
    from repana.compare import Comparison
    from repana.io import atomic_savefig
    from repana.plots.similarity import plot_similarity_heatmap

    # Two small BERTs, randomly initialised from a config (nothing is downloaded); a wider initialisation
    # than BERT's 0.02 so that every layer changes the representation.
    config = BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=32, initializer_range=0.2)
    torch.manual_seed(0)
    model_a = BertModel(config).eval()
    torch.manual_seed(1)
    model_b = BertModel(config).eval()

    generator = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(0, 100, (64, 16), generator=generator),  # token ids stay integers
             "attention_mask": torch.ones(64, 16, dtype=torch.long)}              # passed as keyword arguments

    # A transformer layer outputs (n, tokens, hidden): name the reduction. "tokens": every token of every
    # sequence is a datapoint (64 * 16 x 64); "mean" / "first" ([CLS]) / "flatten" are the others.
    comparison = Comparison(measures=["cka", "cka_debiased"], reduction="tokens")
    frame = comparison.models(model_a, model_b, batch, Capture(layers=["embeddings", "encoder.layer.?"], batch_size=32))
    figure = plot_similarity_heatmap(frame, label_a="BERT, seed 0", label_b="BERT, seed 1")
    atomic_savefig(figure, "out/transformer_example.png", dpi=150)
''')


def test_readme_transformer_example_runs(transformers, tmp_path, monkeypatch):
    """The README's transformer example (kept here so that it cannot rot; README.md holds the same code)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    if README_HEADING in readme:
        code = readme.split(README_HEADING, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
        assert code == EXAMPLE, "README.md's transformer example differs from the tested one"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme_transformer_example"}
    exec(compile(EXAMPLE, "README.md", "exec"), namespace)
    assert (tmp_path / "out" / "transformer_example.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "figures").exists()  # the committed figures are never rewritten
    frame = namespace["frame"]
    cka_values = frame[frame.measure == "cka"].set_index(["layer_a", "layer_b"])["value"]
    # Two random networks share only the structure of their inputs (the same tokens at the same positions):
    # the embeddings agree (measured 0.57), the agreement fades with depth (layers 0-3: 0.10, 0.08, 0.11, 0.10).
    assert 0.4 < cka_values[("embeddings", "embeddings")] < 0.8
    assert cka_values[("encoder.layer.3", "encoder.layer.3")] < 0.3
    assert cka_values[("embeddings", "encoder.layer.3")] < 0.05
    assert set(frame["reduction"]) == {"tokens"} and set(frame["n_datapoints"]) == {64 * 16}
