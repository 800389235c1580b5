"""The llama family (optin.arch.llama) and the decoder-LLM peers (optin.methods.llm_peers) on a tiny random
Llama with grouped-query attention: 4 query heads reading 2 KV heads, MLP 48 channels."""

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from optin.arch import Kept, adapter_for
from optin.arch.llama import block_macs, unit_macs
from optin.methods.llm_peers import flap_scores, llm_pruner_scores, minitron_scores, wanda_sp_scores
from optin.engine.settings import OptinMethod
from optin.models import llm
from optin.engine.scoring import run_teacher, score_layer, score_naive
from optin.engine.search import gqa_head_costs, search_mac, search_threshold

HEADS, KV, DH, FFN, LAYERS = 4, 2, 8, 48, 3


def tiny_llama(channel_group: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                         num_key_value_heads=KV, head_dim=DH, intermediate_size=FFN, tie_word_embeddings=True,
                         max_position_embeddings=64, eos_token_id=1, pad_token_id=1)
    config.optin_channel_group = channel_group
    return LlamaForCausalLM(config).eval()


def token_batch(seed: int = 0, n: int = 3, t: int = 10):
    return {"input_ids": torch.randint(2, 100, (n, t), generator=torch.Generator().manual_seed(seed))}


KEPT = Kept.of(head=((0, 1), (), (3,)), neuron=((0, 2), tuple(range(12)), ()))


def test_the_adapter_forward_is_the_models():
    model = tiny_llama()
    batch = token_batch()
    with torch.no_grad():
        reference = model(**batch).logits.reshape(-1, 100)
    torch.testing.assert_close(adapter_for(model, "llama").forward(batch)[2], reference, rtol=0, atol=1e-5)


@pytest.mark.parametrize("channel_group", [1, 4])
@pytest.mark.parametrize("kind", ["head", "neuron"])
def test_fast_scoring_equals_one_masked_forward_per_unit(kind, channel_group):
    adapter = adapter_for(tiny_llama(channel_group), "llama")
    teacher = run_teacher(adapter, token_batch())
    method = OptinMethod.from_config({"semantics": "paper", "md_rows": 16})  # 30 rows: a seeded subset per tap
    for layer in (0, LAYERS - 1):
        fast = score_layer(adapter, teacher, layer, kind, method, seed=0, chunk=3)
        naive = score_naive(adapter, teacher, layer, kind, method, seed=0)
        assert len(fast) == (HEADS if kind == "head" else FFN // channel_group)
        np.testing.assert_allclose(fast["md"], naive["md"], rtol=1e-4, atol=1e-10)
        np.testing.assert_allclose(fast["kl"], naive["kl"], rtol=1e-4, atol=1e-12)
        assert (naive["kl"] > 0).all()


def test_a_channel_group_is_its_channels_masked_together():
    grouped = adapter_for(tiny_llama(channel_group=4), "llama")
    single = adapter_for(tiny_llama(channel_group=1), "llama")
    batch = token_batch()
    masks = [torch.ones(n) for n in grouped.unit_counts("neuron")]
    masks[1][2] = 0.0
    flat = [torch.ones(n) for n in single.unit_counts("neuron")]
    flat[1][8:12] = 0.0
    torch.testing.assert_close(grouped.forward(batch, neuron_masks=masks)[2], single.forward(batch, neuron_masks=flat)[2])


@pytest.mark.parametrize("channel_group", [1, 4])
def test_slim_equals_masked_reloads_and_generates(tmp_path, channel_group):
    adapter = adapter_for(tiny_llama(channel_group), "llama")
    g = channel_group
    kept = Kept.of(head=KEPT["head"], neuron=tuple(tuple(u for u in layer if u < FFN // g) for layer in KEPT["neuron"]))
    batch = token_batch()
    masked = adapter.masked_logits(batch, kept)
    slim = adapter.slim(kept)
    with torch.no_grad():
        torch.testing.assert_close(slim(**batch).logits.reshape(masked.shape), masked, rtol=0, atol=1e-5)
    assert slim.lm_head.weight.data_ptr() == slim.model.embed_tokens.weight.data_ptr()
    adapter.save_slim(slim, tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True).eval()
    assert type(reloaded).__name__ == "OptinSlimLlamaForCausalLM"
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits.reshape(masked.shape), masked, rtol=0, atol=1e-5)
        prompt = batch["input_ids"][:1, :5]
        generated = reloaded.generate(prompt, max_new_tokens=6, do_sample=False)
        by_hand = prompt
        for _ in range(6):  # greedy decoding without the KV cache
            by_hand = torch.cat([by_hand, reloaded(input_ids=by_hand).logits[:, -1:].argmax(-1)], 1)
    assert generated.tolist() == by_hand.tolist()
    widths = [(layer.self_attn.q_proj.out_features, layer.self_attn.k_proj.out_features, layer.mlp.gate_proj.out_features)
              for layer in reloaded.model.layers]
    assert widths == [(2 * DH, 1 * DH, 2 * g), (0, 0, min(12, FFN // g) * g), (1 * DH, 1 * DH, 0)]
    # the slim model is a llama the adapter reads, with its own per-layer unit counts
    assert adapter_for(reloaded, "llama").unit_counts("head") == [2, 0, 1]


def test_pruning_every_query_head_of_a_kv_group_removes_its_k_and_v():
    adapter = adapter_for(tiny_llama(), "llama")
    # query heads 0, 1 read KV head 0; 2, 3 read KV head 1
    kept = Kept.of(head=((2, 3), (0, 3), (0,)), neuron=(tuple(range(FFN)),) * LAYERS)
    slim = adapter.slim(kept)
    source = adapter.model.model.layers
    for layer, kv in zip(slim.model.layers, ([1], [0, 1], [0]), strict=True):
        assert layer.self_attn.k_proj.out_features == len(kv) * DH
    torch.testing.assert_close(slim.model.layers[0].self_attn.k_proj.weight, source[0].self_attn.k_proj.weight[DH:])
    torch.testing.assert_close(slim.model.layers[2].self_attn.v_proj.weight, source[2].self_attn.v_proj.weight[:DH])
    batch = token_batch()
    with torch.no_grad():
        torch.testing.assert_close(slim(**batch).logits.reshape(-1, 100), adapter.masked_logits(batch, kept), rtol=0, atol=1e-5)


def test_the_search_prices_kv_heads_once_per_group_and_the_slim_model_costs_that():
    heads = pd.DataFrame({"layer": [0, 0, 0, 1], "index": [3, 2, 0, 1]})
    # head 3 opens KV group 1, head 2 shares it, head 0 opens group 0, layer 1's head 1 opens its group 0
    np.testing.assert_allclose(gqa_head_costs(heads, 10.0, 5.0, 2), [0, 15, 25, 40, 55])
    model = tiny_llama(channel_group=4)
    adapter = adapter_for(model, "llama")
    context = 16
    costs = unit_macs(model.config, context, 4)
    base = LAYERS * (HEADS * costs["head"] + KV * costs["kv"] + FFN // 4 * costs["neuron"])
    assert block_macs(model, context) == pytest.approx(base, rel=1e-12)
    rng = np.random.default_rng(0)
    rows = [{"layer": l, "kind": k, "index": i, "importance": float(rng.random())}
            for l in range(LAYERS) for k, n in (("head", HEADS), ("neuron", FFN // 4)) for i in range(n)]
    scores = pd.DataFrame(rows)
    for budget in (0.3, 0.6, 0.9):
        kept, info = search_mac(scores, budget=budget, head_cost=costs["head"], neuron_cost=costs["neuron"], base_macs=base,
                                heads_per_layer=[HEADS] * LAYERS, neurons_per_layer=[FFN // 4] * LAYERS, kv_heads=(costs["kv"], HEADS // KV))
        assert info["achieved_macs"] <= budget * base
        assert block_macs(adapter.slim(kept), context) == pytest.approx(info["achieved_macs"], rel=1e-12)
        kept, info = search_threshold(scores, budget=budget, head_cost=costs["head"], kv_cost=costs["kv"], group_size=HEADS // KV,
                                      neuron_cost=costs["neuron"], base_macs=base, heads_per_layer=[HEADS] * LAYERS,
                                      neurons_per_layer=[FFN // 4] * LAYERS)
        assert info["achieved_macs"] <= budget * base
        assert block_macs(adapter.slim(kept), context) == pytest.approx(info["achieved_macs"], rel=1e-12)


# -- the peers against their formulas, computed from the HF model's own forward ---------------------
def projection_inputs_by_hooks(model, batch):
    """Inputs of every o_proj and down_proj, captured by forward hooks on the HF model's own forward."""
    captured = {}
    hooks = []
    for index, layer in enumerate(model.model.layers):
        for name, module in (("o", layer.self_attn.o_proj), ("down", layer.mlp.down_proj)):
            hooks.append(module.register_forward_hook(
                lambda m, args, out, key=(index, name): captured.__setitem__(key, args[0].reshape(-1, args[0].shape[-1]).double())))
    with torch.no_grad():
        model(**batch)
    for hook in hooks:
        hook.remove()
    return captured


def scores_of(table, kind, layer, column="importance"):
    part = table[(table["kind"] == kind) & (table["layer"] == layer)].sort_values("index")
    return part[column].to_numpy()


def test_flap_scores_are_the_fluctuation_metric():
    model, batch, g = tiny_llama(channel_group=4), token_batch(), 4
    table = flap_scores(adapter_for(model, "llama"), batch)
    inputs = projection_inputs_by_hooks(model, batch)
    for layer in range(LAYERS):
        for kind, name, module in (("head", "o", model.model.layers[layer].self_attn.o_proj),
                                   ("neuron", "down", model.model.layers[layer].mlp.down_proj)):
            x, w = inputs[(layer, name)].numpy(), module.weight.detach().double().numpy()
            metric = np.array([x[:, j].var() * (w[:, j] ** 2).sum() for j in range(x.shape[1])])
            if kind == "head":
                metric = metric**2
            size = DH if kind == "head" else g
            np.testing.assert_allclose(scores_of(table, kind, layer), metric.reshape(-1, size).sum(1), rtol=1e-9)
            z = (metric - metric.mean()) / metric.std(ddof=1)
            np.testing.assert_allclose(scores_of(table, kind, layer, "standardized"), z.reshape(-1, size).mean(1), rtol=1e-9, atol=1e-12)


def test_wanda_sp_scores_are_weight_times_input_norm():
    model, batch = tiny_llama(), token_batch()
    table = wanda_sp_scores(adapter_for(model, "llama"), batch)
    inputs = projection_inputs_by_hooks(model, batch)
    sequences = len(batch["input_ids"])
    layer = 1
    w, x = model.model.layers[layer].self_attn.o_proj.weight.detach().double().numpy(), inputs[(layer, "o")].numpy()
    per_channel = [np.mean([abs(w[i, j]) * np.sqrt((x[:, j] ** 2).sum() / sequences) for i in range(w.shape[0])])
                   for j in range(w.shape[1])]
    np.testing.assert_allclose(scores_of(table, "head", layer), np.reshape(per_channel, (-1, DH)).sum(1), rtol=1e-9)


def test_minitron_scores_aggregate_activations_over_sequence_then_batch():
    model, batch = tiny_llama(), token_batch()
    table = minitron_scores(adapter_for(model, "llama"), batch)
    inputs = projection_inputs_by_hooks(model, batch)
    n, t = batch["input_ids"].shape
    act = inputs[(2, "down")].numpy().reshape(n, t, -1)
    expected = np.sqrt(sum(np.abs(act[s]).mean(0) ** 2 for s in range(n)))
    np.testing.assert_allclose(scores_of(table, "neuron", 2), expected, rtol=1e-9)
    context = inputs[(0, "o")].numpy().reshape(n, t, HEADS, DH)
    expected = np.sqrt(sum(np.linalg.norm(context[s], axis=-1).mean(0) ** 2 for s in range(n)))
    np.testing.assert_allclose(scores_of(table, "head", 0), expected, rtol=1e-9)


def test_llm_pruner_scores_are_first_order_taylor_terms_of_the_lm_loss():
    model, batch = tiny_llama(), token_batch()
    table = llm_pruner_scores(adapter_for(model, "llama"), batch)
    assert all(p.grad is None for p in model.parameters())
    model.zero_grad()
    model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss.backward()  # HF's own shifted LM loss
    layer = model.model.layers[1]
    salience = {name: (lin.weight * lin.weight.grad).double().abs().detach().numpy() for name, lin in
                (("q", layer.self_attn.q_proj), ("k", layer.self_attn.k_proj), ("v", layer.self_attn.v_proj),
                 ("o", layer.self_attn.o_proj), ("gate", layer.mlp.gate_proj), ("up", layer.mlp.up_proj), ("down", layer.mlp.down_proj))}
    group = HEADS // KV
    for h in range(HEADS):
        rows, kv_rows = slice(h * DH, (h + 1) * DH), slice((h // group) * DH, (h // group + 1) * DH)
        expected = (salience["q"][rows].sum() + salience["o"][:, rows].sum()
                    + (salience["k"][kv_rows].sum() + salience["v"][kv_rows].sum()) / group)
        assert scores_of(table, "head", 1)[h] == pytest.approx(expected, rel=1e-6)
    channel = 7
    expected = salience["gate"][channel].sum() + salience["up"][channel].sum() + salience["down"][:, channel].sum()
    assert scores_of(table, "neuron", 1)[channel] == pytest.approx(expected, rel=1e-6)


def test_perplexity_is_the_exponentiated_lm_loss():
    model = tiny_llama()
    windows = token_batch(n=5, t=12)["input_ids"]
    with torch.no_grad():
        loss = model(input_ids=windows, labels=windows).loss
    assert llm.perplexity(model, windows, batch_size=2) == pytest.approx(float(torch.exp(loss)), rel=1e-5)


def test_windows_are_documents_with_eos_cut_without_overlap():
    class Tokens:
        eos_token_id = 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [int(w) for w in text.split()]}

    documents = pd.DataFrame({"text": ["1 2 3", "4 5", "6 7 8 9"]})
    assert llm.corpus_windows(Tokens(), documents, [2, 0], 3).tolist() == [[6, 7, 8], [9, 0, 1], [2, 3, 0]]


def test_zero_shot_sentences_are_balanced_and_seeded():
    labels = np.array([1] * 50 + [0] * 50)           # sorted by label, as rt_polarity's file
    rows = llm.balanced_rows(labels, list(range(0, 100, 2)), 9)
    assert len(rows) == 9 and sorted(labels[rows].tolist()) == [0] * 4 + [1] * 5
    assert set(rows) <= set(range(0, 100, 2)) and rows == llm.balanced_rows(labels, list(range(0, 100, 2)), 9)
    with pytest.raises(ValueError, match="zero_shot.n: 60 sentences"):
        llm.balanced_rows(labels, list(range(0, 100, 2)), 60)


def test_a_float64_model_slims_to_float64_and_matches_exactly():
    adapter = adapter_for(tiny_llama(channel_group=4).double(), "llama")
    slim = adapter.slim(KEPT)
    assert slim.lm_head.weight.dtype == torch.float64
    batch = token_batch()
    with torch.no_grad():
        torch.testing.assert_close(slim(**batch).logits.reshape(-1, 100), adapter.masked_logits(batch, KEPT), rtol=0, atol=1e-12)


def test_flap_bias_compensation_adds_the_removed_channels_mean_output_and_slims(tmp_path):
    from optin.methods.llm_peers import output_biases, with_output_biases
    from optin.engine.search import removed_channel_means

    model, batch, g = tiny_llama(channel_group=4), token_batch(), 4
    adapter = adapter_for(model, "llama")
    table = flap_scores(adapter, batch)
    removed = removed_channel_means(table, KEPT, DH, g)
    inputs = projection_inputs_by_hooks(model, batch)
    for layer in range(LAYERS):
        o_channels = [h * DH + c for h in range(HEADS) if h not in KEPT["head"][layer] for c in range(DH)]
        down_channels = [u * g + c for u in range(FFN // g) if u not in KEPT["neuron"][layer] for c in range(g)]
        assert [c for c, _ in removed["o"][layer]] == o_channels
        assert [c for c, _ in removed["down"][layer]] == down_channels
        biases = output_biases(adapter, removed)[layer]
        for name, channels, module in (("o", o_channels, model.model.layers[layer].self_attn.o_proj),
                                       ("down", down_channels, model.model.layers[layer].mlp.down_proj)):
            mean = inputs[(layer, name)].numpy().mean(0)
            expected = sum(module.weight.detach().double().numpy()[:, j] * mean[j] for j in channels)
            np.testing.assert_allclose(biases[name].numpy(), expected if channels else 0.0, rtol=1e-5, atol=1e-7)
    compensated = adapter_for(with_output_biases(model, output_biases(adapter, removed)), "llama")
    assert model.model.layers[0].self_attn.o_proj.bias is None   # the dense model is untouched
    slim = compensated.slim(KEPT)
    masked = compensated.masked_logits(batch, KEPT)
    compensated.save_slim(slim, tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(slim(**batch).logits.reshape(masked.shape), masked, rtol=0, atol=1e-5)
        torch.testing.assert_close(reloaded(**batch).logits.reshape(masked.shape), masked, rtol=0, atol=1e-5)
    assert reloaded.model.layers[2].mlp.down_proj.in_features == 0 and reloaded.model.layers[2].mlp.down_proj.bias is not None


def test_in_float64_normalises_in_float64_and_leaves_the_model_alone():
    from optin.arch.llama import in_float64

    model = tiny_llama()
    exact = in_float64(model)
    norm = exact.model.layers[0].input_layernorm
    x = torch.randn(3, 32, dtype=torch.float64)
    expected = norm.weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    torch.testing.assert_close(norm(x), expected, rtol=1e-15, atol=0)
    assert model.model.layers[0].input_layernorm.weight.dtype == torch.float32   # a copy
    assert norm(x).dtype == torch.float64 and model.model.layers[0].input_layernorm(x.float()).dtype == torch.float32
