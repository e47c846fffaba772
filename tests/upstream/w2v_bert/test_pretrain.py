"""w2v-BERT pretraining: quantizer + contrastive + diversity against transformers'
Wav2Vec2ConformerForPreTraining (same masks, negatives and Gumbel noise), the MLM head against a
hand computation, temperature annealing and the task's logs."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from speechssl.nn.contrastive import sample_negatives
from speechssl.nn.masking import compute_mask_indices
from speechssl.train.task import PretrainContext
from speechssl.upstream.w2v_bert.config import tiny
from speechssl.upstream.w2v_bert.example import write_example
from speechssl.upstream.w2v_bert.model import W2vBertPretrainModel
from speechssl.upstream.w2v_bert.task import W2vBertPretrainTask

REL = 1e-5  # issue 20: <= 1e-5 relative


def _pair(seed: int = 0):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    hf_cfg = transformers.Wav2Vec2ConformerConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        conv_dim=(16, 160), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, conv_depthwise_kernel_size=7, num_codevector_groups=2,
        num_codevectors_per_group=8, codevector_dim=16, proj_codevector_dim=12, num_negatives=5,
        contrastive_logits_temperature=0.1, diversity_loss_weight=0.2, mask_time_prob=0.5, mask_time_length=3,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
        feat_quantizer_dropout=0.0, final_dropout=0.0, conformer_conv_dropout=0.0, layerdrop=0.0)
    hf = transformers.Wav2Vec2ConformerForPreTraining(hf_cfg).train()
    cfg = dataclasses.replace(tiny(), encoder_embed_dim=32, encoder_attention_heads=4, latent_groups=2, latent_vars=8,
                              latent_dim=16, final_dim=12, num_negatives=5, logit_temp=0.1, dropout_features=0.0)
    ours = W2vBertPretrainModel(cfg).train()
    with torch.no_grad():
        ours.quantizer.vars.copy_(hf.quantizer.codevectors)
        ours.quantizer.weight_proj.load_state_dict(hf.quantizer.weight_proj.state_dict())
        ours.project_q.load_state_dict(hf.project_q.state_dict())
        ours.final_proj.load_state_dict(hf.project_hid.state_dict())
    ours.quantizer.max_temp = ours.quantizer.min_temp = float(hf.quantizer.temperature)  # HF: fixed 2.0
    return hf, ours


@pytest.mark.parametrize("seed", [0, 1])
def test_contrastive_and_diversity_equal_wav2vec2_conformer_for_pretraining(seed: int) -> None:
    hf, ours = _pair(seed)
    gen = torch.Generator().manual_seed(seed)
    wav = 0.3 * torch.randn(2, 4000, generator=gen)
    T = int(hf._get_feat_extract_output_lengths(4000))
    mask = compute_mask_indices((2, T), None, 0.5, 3, min_masks=2, generator=gen)
    negatives = sample_negatives(mask, 5, gen)
    with torch.no_grad():
        base = hf.wav2vec2_conformer(wav, mask_time_indices=mask)  # deterministic: no dropout, no layer drop
    torch.manual_seed(100 + seed)  # HF's Gumbel noise comes from the global generator
    ref = hf(wav, mask_time_indices=mask, sampled_negative_indices=negatives)
    con, diversity, q = ours.contrastive_head(base.last_hidden_state, base.extract_features, mask, negatives,
                                              torch.Generator().manual_seed(100 + seed))
    total = con.loss + 0.2 * diversity
    for name, got, want in (("contrastive", con.loss, ref.contrastive_loss), ("diversity", diversity, ref.diversity_loss),
                            ("loss", total, ref.loss)):
        rel = abs(float(got.detach()) - float(want.detach())) / abs(float(want.detach()))
        assert rel <= REL, f"{name}: ours {float(got.detach())} vs transformers {float(want.detach())} (rel {rel:.2e})"
    assert float(q.prob_perplexity.detach()) == pytest.approx(float(ref.codevector_perplexity.detach()), rel=REL)
    # gradients reach the codebook and the projections through the same graph
    total.backward()
    assert ours.quantizer.vars.grad is not None and float(ours.final_proj.weight.grad.abs().sum()) > 0


def test_mlm_loss_matches_a_hand_computation() -> None:
    cfg = dataclasses.replace(tiny(), encoder_embed_dim=4, encoder_attention_heads=2, latent_groups=2, latent_vars=3,
                              latent_dim=4, final_dim=4)
    model = W2vBertPretrainModel(cfg)
    with torch.no_grad():
        model.mlm_proj.weight.copy_(torch.arange(24, dtype=torch.float32).view(6, 4) / 10 - 1)
        model.mlm_proj.bias.copy_(torch.tensor([0.5, -0.5, 0.0, 1.0, 0.0, -1.0]))
    hidden = torch.tensor([[[1.0, 0.0, -1.0, 2.0], [0.5, 0.5, 0.5, 0.5], [-1.0, 1.0, 0.0, 0.0]]])  # (1, 3, 4)
    codes = torch.tensor([[[2, 0], [1, 1], [0, 2]]])  # (1, 3, G=2)
    mask = torch.tensor([[True, False, True]])
    loss, correct = model.mlm_loss(hidden, codes, mask)
    W, b = model.mlm_proj.weight.tolist(), model.mlm_proj.bias.tolist()
    want, right = 0.0, 0
    for t in (0, 2):
        h = hidden[0, t].tolist()
        logits = [sum(w * x for w, x in zip(W[k], h)) + b[k] for k in range(6)]
        for g in range(2):
            group = logits[3 * g:3 * g + 3]
            target = int(codes[0, t, g])
            want += math.log(sum(math.exp(v) for v in group)) - group[target]
            right += int(max(range(3), key=lambda k: group[k]) == target)
    assert float(loss.detach()) == pytest.approx(want, rel=1e-6)
    assert int(correct) == right


def test_task_anneals_temperature_and_logs_codebook_usage(tmp_path: Path) -> None:
    task_cfg = write_example(tmp_path / "data")
    task = W2vBertPretrainTask(task_cfg, PretrainContext("w2v_bert", tiny(), seed=0))
    model = task.build_model()
    data = task.dataset("train")
    data.set_epoch(1)
    batch = task.collate([data[i] for i in range(3)])
    torch.manual_seed(0)
    loss, size, logs = task.loss(model, batch)
    assert size == logs["masked"] > 0 and torch.isfinite(loss)
    expected = logs["contrastive"] + 0.2 * logs["diversity"] + logs["mlm"]
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    reduced = task.reduce_logs(logs, size)
    assert 0 < reduced["code_usage"] <= 1 and 2 <= reduced["code_ppl"] <= 2 * 32 and reduced["temperature"] == 2.0
    assert 0 <= reduced["acc_c"] <= 1 and 0 <= reduced["acc_mlm"] <= 1
    task.on_update(model, 100)
    assert model.quantizer.temperature == pytest.approx(max(2.0 * 0.995 ** 100, 0.5))
    task.on_update(model, 10_000)
    assert model.quantizer.temperature == 0.5
    resumed = task.build_model()  # a resumed run: the update count comes back with the model's buffers
    resumed.load_state_dict(model.state_dict())
    torch.manual_seed(0)
    assert task.loss(resumed, batch)[2]["temperature"] == 0.5
    assert task.layer_id("upstream.encoder.layers.2.ffn1.w_1.weight") == 3
    assert task.layer_id("upstream.feature_projection.projection.weight") == 0
    assert task.layer_id("mlm_proj.weight") == tiny().encoder_layers + 1
