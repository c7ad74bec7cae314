"""A models directory in upstream GPT-SoVITS's `pretrained_models` layout, for tests.

The v2 files are written from upstream's own classes (`../shared/reference`, random init,
saved the way upstream's pretrained files are), and the HuBERT / RoBERTa directories are
tiny randomly initialised Hugging Face models written with `save_pretrained`, so the code
that loads them is the real one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT.parent / "shared" / "reference"
UPSTREAM = REFERENCE / "GPT-SoVITS" / "GPT_SoVITS"
STUBS = REFERENCE / "GPT-SoVITS-stubs"

# Characters of the Mandarin test lines; the tiny RoBERTa vocabulary holds these.
HAN_VOCAB = (
    "今天的天气很好我们去公园散步这个模型在晚上训练用是清洁能源谢你听段简短录音"
    "一二三四五六七八九十零"
)
PUNCT_VOCAB = "，。！？、,.!?-…"


def upstream_available() -> bool:
    """Whether the upstream reference code is beside the checkout."""
    return (UPSTREAM / "module" / "models.py").is_file() and STUBS.is_dir()


def _import_upstream() -> None:
    for path in (str(UPSTREAM), str(STUBS)):  # the stubs must come first
        if path not in sys.path:
            sys.path.insert(0, path)


def s1_v2_config() -> dict:
    """Upstream's `configs/s1longer-v2.yaml` model section (the v2 GPT)."""
    return {
        "model": {
            "vocab_size": 1025,
            "phoneme_vocab_size": 732,
            "embedding_dim": 512,
            "hidden_dim": 512,
            "head": 16,
            "linear_units": 2048,
            "n_layer": 24,
            "dropout": 0,
            "EOS": 1024,
            "random_bert": 0,
        },
        "data": {"max_eval_sample": 8, "max_sec": 54, "num_workers": 4, "pad_val": 1024},
    }


def write_v2_files(directory: Path, seed: int = 0) -> None:
    """s1 `.ckpt`, `s2G2333k.pth` and `s2D2333k.pth` from upstream classes at v2 size."""
    _import_upstream()
    from AR.models.t2s_model import Text2SemanticDecoder
    from module.models import MultiPeriodDiscriminator, SynthesizerTrn

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = s1_v2_config()
    t2s = Text2SemanticDecoder(config)
    torch.save(
        {
            "weight": {f"model.{k}": v.half() for k, v in t2s.state_dict().items()},
            "config": config,
            "info": "GPT-e0",
        },
        directory / "s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt",
    )
    del t2s
    hps = json.loads((UPSTREAM / "configs" / "s2.json").read_text())
    generator = SynthesizerTrn(
        hps["data"]["filter_length"] // 2 + 1,
        hps["train"]["segment_size"] // hps["data"]["hop_length"],
        n_speakers=hps["data"]["n_speakers"],
        **{**hps["model"], "version": "v2"},
    )
    # Upstream's codebook starts as zeros until its k-means init runs on the first batch; a
    # pretrained base has a trained one, so the stand-in base gets distinct random codes.
    codebook = generator.quantizer.vq.layers[0]._codebook
    codebook.embed.copy_(torch.randn_like(codebook.embed))
    codebook.inited.fill_(1)
    torch.save(
        {"weight": {k: v.half() for k, v in generator.state_dict().items()}, "info": "pretrained"},
        directory / "s2G2333k.pth",
    )
    del generator
    discriminator = MultiPeriodDiscriminator(hps["model"]["use_spectral_norm"], version="v2")
    torch.save(
        {"weight": {k: v.half() for k, v in discriminator.state_dict().items()}},
        directory / "s2D2333k.pth",
    )


def write_hubert(directory: Path, seed: int = 0) -> None:
    """A one-layer HuBERT with upstream's 768-wide output and 320-sample stride."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    torch.manual_seed(seed)
    config = HubertConfig(
        hidden_size=768,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=16,
    )
    HubertModel(config).save_pretrained(str(directory))
    Wav2Vec2FeatureExtractor(sampling_rate=16_000).save_pretrained(str(directory))


def bert_vocab() -> list[str]:
    """The tiny RoBERTa's vocabulary, in `vocab.txt` order."""
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(HAN_VOCAB + PUNCT_VOCAB))]


def write_roberta(directory: Path, seed: int = 0) -> None:
    """A three-layer BERT masked LM with upstream's 1024-wide hidden states and a vocab.txt."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    vocab = bert_vocab()
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=1024,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertForMaskedLM(config).save_pretrained(str(directory))
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")


def write_models_dir(root: Path, *, with_v2: bool = True) -> Path:
    """`root` laid out as upstream's `pretrained_models` (v2 files and the two HF models)."""
    if with_v2:
        write_v2_files(root / "gsv-v2final-pretrained")
    write_hubert(root / "chinese-hubert-base")
    write_roberta(root / "chinese-roberta-wwm-ext-large")
    return root
