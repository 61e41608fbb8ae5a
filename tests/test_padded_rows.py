"""Rows of different lengths read as one right-padded batch end with the states and logits each row has when read
alone (Mamba-1, FalconMamba's normed Mamba-1 and Mamba-2 with groups; from empty and from a document's state; whole
or segment by segment), on the plain path in fp32."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mamba_router.models.mamba import random_mamba
from mamba_router.models.mamba_config import SSMConfig
from mamba_router.models.ssm_cache import SSMCache
from mamba_router.models.torch_ops import TorchOps

VOCAB = 97
CONFIGS = {
    "mamba1": SSMConfig(arch="mamba1", d_model=32, n_layer=2, vocab_size=VOCAB, chunk_size=8),
    "falcon-mamba": SSMConfig(arch="mamba1", d_model=32, n_layer=2, vocab_size=VOCAB, chunk_size=8, bcdt_rms_eps=1e-6),
    "mamba2-groups": SSMConfig(
        arch="mamba2", d_model=32, n_layer=2, vocab_size=VOCAB, headdim=8, ngroups=2, chunk_size=8
    ),
}
MODELS = {name: random_mamba(cfg, TorchOps(), seed=3).eval() for name, cfg in CONFIGS.items()}


@settings(max_examples=12, deadline=None)
@given(
    name=st.sampled_from(sorted(MODELS)),
    lengths=st.lists(st.integers(1, 21), min_size=1, max_size=5),
    from_document=st.lists(st.booleans(), min_size=5, max_size=5),
    segment=st.sampled_from([None, 4, 7]),
    seed=st.integers(0, 1000),
)
def test_a_padded_batch_reads_each_row_as_alone(name, lengths, from_document, segment, seed) -> None:
    model = MODELS[name]
    generator = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(1, VOCAB, (n,), generator=generator) for n in lengths]
    with torch.inference_mode():
        starts = []
        for i in range(len(prompts)):
            cache = model.new_cache(1)
            if from_document[i]:
                model.read(torch.randint(1, VOCAB, (1, 9), generator=generator), cache)
            starts.append(cache)
        alone_caches = [start.clone() for start in starts]
        alone = [model.read(p[None], c, segment=segment) for p, c in zip(prompts, alone_caches)]
        batch = SSMCache.stack(starts)
        padded = torch.nn.utils.rnn.pad_sequence(prompts, batch_first=True)
        together = model.read(padded, batch, segment=segment, lengths=torch.tensor(lengths))
    for i, cache in enumerate(alone_caches):
        torch.testing.assert_close(together[i], alone[i][0], atol=1e-4, rtol=1e-4)
        for layer in range(len(cache.ssm)):
            torch.testing.assert_close(batch.ssm[layer][i], cache.ssm[layer][0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(batch.conv[layer][i], cache.conv[layer][0], atol=1e-6, rtol=1e-6)


def test_padding_is_refused_where_it_would_change_the_state() -> None:
    cfg = SSMConfig(arch="mamba2", d_model=32, n_layer=1, vocab_size=VOCAB, headdim=8, dt_limit=(0.001, 0.1))
    model = random_mamba(cfg, TorchOps())
    assert not model.reads_padded_rows  # a lower time-step limit above zero: a padding position would decay it
    with pytest.raises(ValueError, match="padding keeps states"):
        model(torch.ones(2, 3, dtype=torch.long), model.new_cache(2), lengths=torch.tensor([3, 1]))
