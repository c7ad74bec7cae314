"""Features from a base's own models, as upstream GPT-SoVITS prepares them.

- SSL: `chinese-hubert-base` loaded with `transformers.HubertModel` from the worker's models
  directory (never downloaded). Upstream (`prepare_datasets/2-get-hubert-wav32k.py`) feeds
  the peak-mixed clip, scaled to a range of +-1145.14 and resampled to 16 kHz, straight into
  the model (no feature-extractor normalisation) and keeps the last hidden state, [768, T]
  at 50 Hz.
- BERT: `chinese-roberta-wwm-ext-large` through `AutoTokenizer` and `AutoModelForMaskedLM`
  (`1-get-text.py`): the third-from-last hidden state, one vector per character of the
  normalised text without the [CLS]/[SEP] rows, repeated `word2ph[i]` times, [1024, phones].
  Only Mandarin lines get one; other lines train on zeros, as upstream.
- Semantic tokens: the base's stage-2 `ssl_proj` (a stride-2 convolution to 25 Hz) and the
  nearest entry of its quantizer's codebook (`3-get-semantic.py`, `extract_latent`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# Upstream's input scale for HuBERT: the mix it writes to int16 divided by 32768, x 1145.14.
HUBERT_INPUT_SCALE = 1145.14
BERT_LAYER = -3
SSL_PROJ_WEIGHT = "ssl_proj.weight"
SSL_PROJ_BIAS = "ssl_proj.bias"
CODEBOOK_KEY = "quantizer.vq.layers.0._codebook.embed"


class FeatureError(RuntimeError):
    """A base's feature model could not be loaded or used."""


class HubertFeatures:
    """chinese-hubert-base from a local Hugging Face directory."""

    def __init__(self, directory: Path) -> None:
        from transformers import HubertModel

        try:
            self.model = HubertModel.from_pretrained(str(directory), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise FeatureError(f"cannot load HuBERT from {directory}: {exc}") from exc
        self.model.eval()

    @torch.no_grad()
    def __call__(self, wav16k: np.ndarray) -> np.ndarray:
        """[768, T] frames at 50 Hz for a peak-mixed 16 kHz clip in [-1, 1]."""
        audio = torch.from_numpy(np.asarray(wav16k, dtype=np.float32) * HUBERT_INPUT_SCALE)
        hidden = self.model(audio[None, :])["last_hidden_state"]
        features = hidden[0].T.float().numpy()
        if not np.isfinite(features).all():
            raise FeatureError("HuBERT produced non-finite features")
        return features


class BertFeatures:
    """chinese-roberta-wwm-ext-large (a BERT model) from a local Hugging Face directory."""

    def __init__(self, directory: Path) -> None:
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
            self.model = AutoModelForMaskedLM.from_pretrained(str(directory), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise FeatureError(f"cannot load RoBERTa from {directory}: {exc}") from exc
        self.model.eval()

    @torch.no_grad()
    def __call__(self, norm_text: str, word2ph: list[int]) -> np.ndarray | None:
        """[hidden, sum(word2ph)] phone-level features, or None when the tokens do not line
        up one per character (upstream skips such a line; here it trains on zeros)."""
        if len(word2ph) != len(norm_text):
            return None
        inputs = self.tokenizer(norm_text, return_tensors="pt")
        output = self.model(**inputs, output_hidden_states=True)
        per_token = output["hidden_states"][BERT_LAYER][0][1:-1]
        if per_token.shape[0] != len(word2ph):
            return None
        counts = torch.tensor(word2ph, dtype=torch.long)
        return per_token.repeat_interleave(counts, dim=0).T.float().numpy()


def _generator_tensors(path: Path) -> dict[str, torch.Tensor]:
    # A base on the worker's own disk, put there by its operator (never a team's upload):
    # upstream writes these with torch.save, tensors under "weight".
    raw = torch.load(path, map_location="cpu", weights_only=False)
    weights = raw.get("weight", raw) if isinstance(raw, dict) else None
    if not isinstance(weights, dict):
        raise FeatureError(f"{path} is not an upstream s2G file (no 'weight' dict)")
    return {k: v for k, v in weights.items() if isinstance(v, torch.Tensor)}


class BaseQuantizer:
    """The base stage-2 model's content path: `ssl_proj`, then the nearest codebook entry."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, codebook: torch.Tensor) -> None:
        if weight.ndim != 3 or codebook.ndim != 2 or codebook.shape[1] != weight.shape[0]:
            raise FeatureError(
                f"base quantizer shapes do not fit: ssl_proj {tuple(weight.shape)}, "
                f"codebook {tuple(codebook.shape)}"
            )
        self.weight, self.bias, self.codebook = weight.float(), bias.float(), codebook.float()

    @classmethod
    def from_generator_file(cls, path: Path) -> BaseQuantizer:
        """Read `ssl_proj` and the codebook from an upstream `s2G*.pth`."""
        state = _generator_tensors(path)
        missing = [k for k in (SSL_PROJ_WEIGHT, SSL_PROJ_BIAS, CODEBOOK_KEY) if k not in state]
        if missing:
            raise FeatureError(f"{path} lacks {', '.join(missing)}")
        codebook = state[CODEBOOK_KEY]
        # Stored as [codebooks=1, 1024, 768] by some versions, [1024, 768] by others.
        codebook = codebook.reshape(-1, codebook.shape[-1])
        return cls(state[SSL_PROJ_WEIGHT], state[SSL_PROJ_BIAS], codebook)

    @property
    def size(self) -> int:
        """Number of codes."""
        return int(self.codebook.shape[0])

    @torch.no_grad()
    def __call__(self, ssl: np.ndarray) -> list[int]:
        """25 Hz code ids of [768, T50] SSL frames."""
        frames = torch.from_numpy(np.asarray(ssl, dtype=np.float32))[None]
        stride = self.weight.shape[-1]
        if frames.shape[-1] < self.weight.shape[-1]:
            return []
        projected = F.conv1d(frames, self.weight, self.bias, stride=stride)[0].T
        distances = (
            projected.pow(2).sum(1, keepdim=True)
            - 2 * projected @ self.codebook.T
            + self.codebook.pow(2).sum(1)[None, :]
        )
        return distances.argmin(dim=1).tolist()


@dataclass
class UpstreamFeatures:
    """The three extractors of a base, loaded once per preparation."""

    hubert: HubertFeatures
    bert: BertFeatures
    quantizer: BaseQuantizer
    base: str

    @classmethod
    def load(
        cls, base: str, hubert_dir: Path, roberta_dir: Path, generator: Path
    ) -> UpstreamFeatures:
        """Load from a base's files (see worker.training.bases.BaseFiles)."""
        return cls(
            HubertFeatures(hubert_dir),
            BertFeatures(roberta_dir),
            BaseQuantizer.from_generator_file(generator),
            base,
        )
