"""Base models on a worker: the `--models` check, upstream features, and a v2 fine-tune.

The models directory is built once for the module from upstream's classes at v2 size (random
init) plus tiny Hugging Face HuBERT / RoBERTa directories (see upstream_bases.py).
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile
import torch
from sqlalchemy import update
from support import upstream_bases
from support.helpers import WORKER_TOKEN, admin_headers, bearer, serve_in_thread

from scheduler.app import create_app
from scheduler.db.session import session_scope
from scheduler.jobs.models import Job
from scheduler.settings import Settings
from worker.cli import held_bases, run_agent
from worker.training.bases import (
    BaseModelsError,
    base_files,
    scan_models_dir,
)
from worker.training.data.upstream_features import (
    BaseQuantizer,
    BertFeatures,
    HubertFeatures,
)

needs_upstream = pytest.mark.skipif(
    not upstream_bases.upstream_available(), reason="../shared/reference is not beside the checkout"
)

LINES = (
    ("zh", "今天的天气很好。"),
    ("en", "Good morning, the forecast looks bright."),
    ("zh", "谢谢你听这段简短的录音。"),
)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not upstream_bases.upstream_available():
        pytest.skip("../shared/reference is not beside the checkout")
    return upstream_bases.write_models_dir(tmp_path_factory.mktemp("pretrained_models"))


def write_dataset(root: Path, seconds: float = 1.5) -> Path:
    """Tone clips with Mandarin and English lines, as a dataset directory."""
    rng = np.random.default_rng(0)
    (root / "wavs").mkdir(parents=True, exist_ok=True)
    lines = []
    for index, (language, text) in enumerate(LINES):
        t = np.arange(int(32_000 * seconds)) / 32_000
        wave = 0.3 * np.sin(2 * np.pi * (150 + 30 * index) * t * (1 + 0.2 * np.sin(3 * t)))
        soundfile.write(
            root / f"wavs/c{index}.wav", wave + 0.02 * rng.standard_normal(t.size), 32_000
        )
        lines.append(f"wavs/c{index}.wav|speaker|{language}|{text}")
    (root / "voice.list").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


# ------------------------------------------------------------------ the --models check


def _fake_hf(directory: Path, model_type: str, vocab: bool = False) -> None:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"model_type": model_type}))
    (directory / "model.safetensors").write_bytes(b"x")
    if vocab:
        (directory / "vocab.txt").write_text("[PAD]\n")


def test_models_dir_check_names_what_is_missing(tmp_path: Path) -> None:
    root = tmp_path / "pretrained_models"
    _fake_hf(root / "chinese-hubert-base", "hubert")
    _fake_hf(root / "chinese-roberta-wwm-ext-large", "wav2vec2", vocab=False)
    (root / "gsv-v2final-pretrained").mkdir()
    (root / "gsv-v2final-pretrained" / "s2G2333k.pth").write_bytes(b"x")
    held = scan_models_dir(root)
    assert held.names == ["none"]
    problems = " ".join(held.problems["v2"])
    assert "s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt" in problems
    assert "s2D2333k.pth" in problems and "s2G2333k.pth" not in problems
    assert "model_type 'wav2vec2'" in problems and "vocab" in problems
    with pytest.raises(SystemExit, match="s2D2333k.pth"):
        held_bases(root)  # a --models directory with no complete base stops the worker
    with pytest.raises(BaseModelsError, match="s2D2333k.pth"):
        base_files(root, "v2")
    with pytest.raises(SystemExit, match="does not exist"):
        held_bases(tmp_path / "nowhere")
    assert held_bases(None) == ["none"]

    (root / "gsv-v2final-pretrained" / "s2D2333k.pth").write_bytes(b"x")
    (root / "gsv-v2final-pretrained" / "s1-my-own.ckpt").write_bytes(b"x")
    shutil.rmtree(root / "chinese-roberta-wwm-ext-large")
    _fake_hf(root / "chinese-roberta-wwm-ext-large", "bert", vocab=True)
    assert held_bases(root) == ["none", "v2"]
    files = base_files(root, "v2")
    assert files is not None and files.s1.name == "s1-my-own.ckpt"
    assert base_files(None, "none") is None


# ------------------------------------------------------------------ features


@needs_upstream
def test_semantic_tokens_equal_upstream_extract_latent(models_dir: Path) -> None:
    upstream_bases._import_upstream()
    from module.models import SynthesizerTrn

    hps = json.loads((upstream_bases.UPSTREAM / "configs" / "s2.json").read_text())
    reference = SynthesizerTrn(
        hps["data"]["filter_length"] // 2 + 1,
        hps["train"]["segment_size"] // hps["data"]["hop_length"],
        n_speakers=hps["data"]["n_speakers"],
        **{**hps["model"], "version": "v2"},
    )
    generator = models_dir / "gsv-v2final-pretrained" / "s2G2333k.pth"
    state = torch.load(generator, map_location="cpu", weights_only=False)["weight"]
    reference.load_state_dict({k: v.float() for k, v in state.items()})
    reference.eval()
    ssl = torch.randn(1, 768, 101)
    with torch.no_grad():
        expected = reference.extract_latent(ssl)[0, 0].tolist()
    ours = BaseQuantizer.from_generator_file(generator)(ssl[0].numpy())
    assert len(ours) == 50 and ours == expected
    assert len(set(ours)) > 1  # a real codebook, not one code for everything


@needs_upstream
def test_hubert_and_bert_features_follow_upstream_recipes(models_dir: Path) -> None:
    from transformers import AutoModelForMaskedLM, AutoTokenizer, HubertModel

    wav16k = (0.1 * np.random.default_rng(1).standard_normal(16_000)).astype(np.float32)
    ours = HubertFeatures(models_dir / "chinese-hubert-base")(wav16k)
    model = HubertModel.from_pretrained(str(models_dir / "chinese-hubert-base")).eval()
    with torch.no_grad():
        # 2-get-hubert-wav32k.py: the mix scaled to +-1145.14, no feature-extractor step.
        hidden = model(torch.from_numpy(wav16k * 1145.14)[None])["last_hidden_state"]
    assert ours.shape == (768, 49)  # 400-sample window every 320 samples
    np.testing.assert_allclose(ours, hidden[0].T.numpy(), atol=1e-5)

    roberta = models_dir / "chinese-roberta-wwm-ext-large"
    text, word2ph = "今天的天气很好。", [2, 2, 2, 2, 2, 2, 2, 1]
    features = BertFeatures(roberta)(text, word2ph)
    tokenizer = AutoTokenizer.from_pretrained(str(roberta))
    bert = AutoModelForMaskedLM.from_pretrained(str(roberta)).eval()
    with torch.no_grad():
        # 1-get-text.py: hidden_states[-3], drop [CLS]/[SEP], repeat each row word2ph[i] times.
        res = bert(**tokenizer(text, return_tensors="pt"), output_hidden_states=True)
        per_char = res["hidden_states"][-3][0][1:-1]
    expected = torch.cat([per_char[i].repeat(n, 1) for i, n in enumerate(word2ph)]).T
    assert features is not None and features.shape == (1024, 15)
    np.testing.assert_allclose(features, expected.numpy(), atol=1e-5)
    assert BertFeatures(roberta)(text, word2ph[:-1]) is None  # misaligned: zeros instead


# ------------------------------------------------------------------ a v2 job end to end


def _dataset_zip(root: Path) -> bytes:
    directory = write_dataset(root)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(directory).as_posix())
    return buffer.getvalue()


@pytest.fixture
def service(settings: Settings) -> Iterator[tuple[Any, str]]:
    app = create_app(settings.model_copy(update={"heartbeat_seconds": 1}), run_ticks=False)
    with serve_in_thread(app) as url:
        yield app, url


@needs_upstream
@pytest.mark.slow
# The database is not what this test is about; one run of a v2-size job is enough.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_worker_with_models_runs_a_v2_job_with_upstream_features(
    models_dir: Path, service: tuple[Any, str], tmp_path: Path
) -> None:
    app, url = service
    team = httpx.post(f"{url}/v1/teams", json={"name": "alpha"}, headers=admin_headers())
    key = team.json()["api_key"]
    uploaded = httpx.post(
        f"{url}/v1/datasets",
        content=_dataset_zip(tmp_path / "dataset"),
        headers={**bearer(key), "content-type": "application/zip"},
    )
    assert uploaded.status_code == 201, uploaded.text
    body = {
        "name": "voice-v2",
        "dataset": {"id": uploaded.json()["id"]},
        "config": {
            "base": "v2",
            "model_size": "v2",
            "stage": "both",
            "max_steps": 1,
            "batch_size": 1,
            "save_every_steps": 1,
        },
        "max_delay_minutes": 0,
    }
    submitted = httpx.post(f"{url}/v1/jobs", json=body, headers=bearer(key))
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["id"]
    with session_scope(app.state.session_factory) as session:
        session.execute(update(Job).where(Job.id == job_id).values(state="ready"))

    run_agent(
        url,
        WORKER_TOKEN,
        gpus=None,
        zone="ES",
        work_dir=tmp_path / "worker",
        cpu_only=True,
        poll_seconds=0.1,
        max_jobs=1,
        models_dir=models_dir,
        options={"codecarbon": False, "sample_seconds": 0.2},
    )

    job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=bearer(key)).json()
    assert job["state"] == "succeeded", job["error"]
    workers = httpx.get(f"{url}/v1/workers", headers=admin_headers()).json()
    assert workers[0]["bases"] == ["none", "v2"]

    names = {
        a["name"]
        for a in httpx.get(f"{url}/v1/jobs/{job_id}/artifacts", headers=bearer(key)).json()
    }
    assert {"s1_lora.safetensors", "s2_lora.safetensors", "adapter_config.json"} <= names
    adapter_config = httpx.get(
        f"{url}/v1/jobs/{job_id}/artifacts/adapter_config.json", headers=bearer(key)
    ).json()
    assert adapter_config["base"] == "v2"
    assert adapter_config["features"]["path"] == "upstream"

    events = httpx.get(f"{url}/v1/jobs/{job_id}/events", headers=bearer(key)).json()
    reasons = " ".join(e["reason"] for e in events)
    assert "base v2, upstream features" in reasons and "prepared bert: 3" in reasons

    energy = httpx.get(f"{url}/v1/jobs/{job_id}/energy", headers=bearer(key)).json()
    assert energy["model"]["features"]["path"] == "upstream"


@needs_upstream
def test_preparation_with_a_base_uses_its_models(models_dir: Path, tmp_path: Path) -> None:
    from worker.training.data import layout
    from worker.training.data.prepare import PrepareError, prepare_dataset
    from worker.training.data.upstream_features import UpstreamFeatures

    files = base_files(models_dir, "v2")
    assert files is not None
    features = UpstreamFeatures.load("v2", files.hubert_dir, files.roberta_dir, files.s2_generator)
    dataset = write_dataset(tmp_path / "dataset")
    prepared = prepare_dataset(dataset, tmp_path / "prepared", features=features)
    by_name = {item.name: item for item in prepared.items}
    assert set(by_name) == {"c0.wav", "c1.wav", "c2.wav"}
    # BERT features for the Mandarin lines only; zeros for English, as upstream trains.
    assert layout.bert_path(tmp_path / "prepared", "c0.wav").is_file()
    assert not layout.bert_path(tmp_path / "prepared", "c1.wav").is_file()
    assert np.abs(by_name["c0.wav"].bert).sum() > 0 and not by_name["c1.wav"].bert.any()
    # SSL from HuBERT and tokens from the base's quantizer (no k-means codebook).
    ssl = layout.read_ssl(tmp_path / "prepared", "c2.wav")
    quantizer = BaseQuantizer.from_generator_file(files.s2_generator)
    assert by_name["c2.wav"].semantic == quantizer(ssl)
    assert ssl.shape[0] == 768 and prepared.codebook is None
    # A directory prepared with one feature path is never topped up with the other.
    with pytest.raises(PrepareError, match="upstream:v2"):
        prepare_dataset(dataset, tmp_path / "prepared")


def test_a_continuation_starts_from_the_earlier_jobs_adapters(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from worker.training.checkpoint import seed_everything
    from worker.training.config import FinetuneConfig
    from worker.training.lora import export_adapter
    from worker.training.stages import StartingPoint, build_stage

    config = FinetuneConfig(stage="s1", model_size="tiny", lora_rank=4)
    seed_everything(config.seed)
    earlier = build_stage("s1", config, torch.device("cpu"))
    model = earlier.models["t2s"]
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param))  # as if trained
    saved = export_adapter(model, tmp_path / "s1_lora.safetensors", {"stage": "s1"})

    seed_everything(config.seed)
    fresh = build_stage("s1", config, torch.device("cpu")).models["t2s"]
    seed_everything(config.seed)
    start = StartingPoint(adapters={"s1": saved})
    continued = build_stage("s1", config, torch.device("cpu"), start=start).models["t2s"]
    expected = load_file(str(saved))
    trained = {n: p for n, p in continued.named_parameters() if p.requires_grad}
    assert trained.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(trained[name], value.float())
    # Frozen base weights are the same seeded init either way.
    frozen = {n: p for n, p in fresh.named_parameters() if not p.requires_grad}
    for name, param in continued.named_parameters():
        if not param.requires_grad:
            torch.testing.assert_close(param, frozen[name])
