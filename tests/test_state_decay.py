"""``state_decay``: kept between decode steps, never stale, and on the autograd graph when training."""

from __future__ import annotations

import torch

from mamba_router.models.layers.mamba2 import Mamba2Mixer
from mamba_router.models.layers.ssm_decay import forget_state_decays, state_decay
from mamba_router.models.mamba_config import SSMConfig


def _mixer() -> Mamba2Mixer:
    return Mamba2Mixer(SSMConfig(arch="mamba2", d_model=32, n_layer=1, vocab_size=16, d_state=8, headdim=8))


def test_kept_without_gradients_and_renewed_when_a_log_changes() -> None:
    mixer = _mixer()
    with torch.no_grad():
        first = state_decay(mixer)
        assert state_decay(mixer) is first
        torch.testing.assert_close(first, -torch.exp(mixer.A_log.float()))
        mixer.A_log.add_(0.5)  # new weights loaded in place
        renewed = state_decay(mixer)
        assert renewed is not first
        torch.testing.assert_close(renewed, -torch.exp(mixer.A_log.float()))
    mixer.double()
    with torch.inference_mode():
        assert state_decay(mixer).dtype == torch.float32
        torch.testing.assert_close(state_decay(mixer), -torch.exp(mixer.A_log.float()))


def test_with_gradients_it_is_computed_on_the_graph() -> None:
    mixer = _mixer()
    with torch.no_grad():
        state_decay(mixer)  # a kept value must not leak into training
    decay = state_decay(mixer)
    assert decay.requires_grad
    decay.sum().backward()
    assert mixer.A_log.grad is not None and bool(mixer.A_log.grad.abs().sum() > 0)


def test_a_model_made_in_inference_mode_keeps_its_value_until_told_its_weights_changed() -> None:
    """Inference tensors have no version counter (reading it raised on the GPU suite's real-mamba models)."""
    with torch.inference_mode():
        mixer = _mixer()
        assert mixer.A_log.is_inference()
        first = state_decay(mixer)
        assert state_decay(mixer) is first
        mixer.A_log.add_(0.5)  # unseen without a version counter: announced, as merging an adapter does
        forget_state_decays(mixer)
        torch.testing.assert_close(state_decay(mixer), -torch.exp(mixer.A_log.float()))
