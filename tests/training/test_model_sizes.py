"""Model structure: v2 parameter counts, masks, padding invariance and output shapes."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from worker.training.batches import collate_s1, collate_s2
from worker.training.models.sizes import sovits_size, t2s_size
from worker.training.models.sovits import SoVITSGenerator, build_discriminator
from worker.training.models.t2s import Text2Semantic, prefix_lm_mask, t2s_targets
from worker.training.synthetic import synthetic_items


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Two threads on a busy two-core machine spin against each other; one is steadier.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _count(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: Text2Semantic(t2s_size("v2")), 77.6),
        (lambda: SoVITSGenerator(sovits_size("v2")), 51.3),
        (lambda: build_discriminator(sovits_size("v2")), 46.75),
    ],
    ids=["s1", "s2-generator", "s2-discriminator"],
)
def test_v2_parameter_counts_match_the_original(build, expected: float) -> None:
    assert _count(build()) == pytest.approx(expected, rel=0.02)


def test_prefix_lm_mask_text_sees_text_and_codes_see_the_past() -> None:
    # Item 0 has 2 real phonemes of 3 (left-padded), 3 code slots.
    mask = prefix_lm_mask(torch.tensor([2, 3]), n_text=3, n_semantic=3)[0, 0]
    pad, text, code0, code2 = 0, 1, 3, 5
    assert not mask[text, pad] and mask[text, 2]
    assert not mask[text, code0]
    assert mask[code0, text] and not mask[code0, code2]
    assert mask[code2, code0] and mask[code2, code2]
    assert mask[1:, 1:3].all()


def test_t2s_targets_append_eos_and_replace_padding() -> None:
    semantic = torch.tensor([[5, 6, 7], [8, 9, 1024]])
    targets = t2s_targets(semantic, torch.tensor([3, 2]), eos=1024)
    assert targets.tolist() == [[5, 6, 7, 1024], [8, 9, 1024, 1024]]


def test_left_padding_does_not_change_an_items_logits() -> None:
    torch.manual_seed(0)
    size = t2s_size("tiny")
    model = Text2Semantic(size).eval()
    short, long = synthetic_items(6, seed=3)[0], synthetic_items(6, seed=3)[1]
    long.phoneme_ids = long.phoneme_ids + [3, 4, 5, 6]
    long.bert = np.zeros((1024, len(long.phoneme_ids)), dtype=np.float32)
    alone = collate_s1([short], size.eos)
    batched = collate_s1([short, long], size.eos)
    assert batched["phonemes"].shape[1] > alone["phonemes"].shape[1]
    with torch.no_grad():
        a = model(alone["phonemes"], alone["text_lens"], alone["bert"], alone["semantic"])
        b = model(batched["phonemes"], batched["text_lens"], batched["bert"], batched["semantic"])
    n = a.shape[1]
    torch.testing.assert_close(b[0, :n], a[0], rtol=1e-4, atol=1e-4)


def test_sovits_generator_decodes_one_window_of_hop_samples_per_frame() -> None:
    torch.manual_seed(0)
    size = sovits_size("tiny")
    generator = SoVITSGenerator(size)
    batch = collate_s2(synthetic_items(2, seconds=0.5), size.audio.hop)
    from worker.training.audio import linear_spectrogram

    spec = linear_spectrogram(batch["wav"], size.audio)
    assert spec.shape[-1] == batch["ssl"].shape[-1]
    out = generator(batch["ssl"], spec, batch["frame_lens"], batch["phonemes"], batch["text_lens"])
    assert out.audio.shape == (2, 1, size.audio.segment_frames * size.audio.hop)
    assert out.z_p.shape == out.m_p.shape == (2, size.hidden, spec.shape[-1])
    scores, features = build_discriminator(size)(out.audio)
    assert len(scores) == 1 + len(size.disc_periods)
    assert all(len(f) > 0 for f in features)


def test_quantizer_maps_frames_to_their_nearest_code() -> None:
    generator = SoVITSGenerator(sovits_size("tiny"))
    codebook = np.random.default_rng(0).normal(size=(16, 768)).astype(np.float32)
    generator.quantizer.set_codebook(codebook)
    frames = torch.from_numpy(codebook[[3, 7, 7, 0]].T[None]) + 0.01
    codes, quantized = generator.quantizer(frames)
    assert codes.tolist() == [[3, 7, 7, 0]]
    torch.testing.assert_close(quantized[0], torch.from_numpy(codebook[[3, 7, 7, 0]].T))
