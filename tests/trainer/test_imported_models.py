"""The lab's own base model (issue 16, part 4): a folder holding a transformers causal LM and its
tokenizer — here tiny, randomly initialised GPT-2 and Llama models with a byte-level BPE trained
on a few strings, saved to a temporary folder, as a lab's own would be — is imported as a model
version of kind "imported"; a quality-safety dataset is rendered with its tokenizer (Groundwork's
special tokens added), a fine-tune runs on the real training worker, and sample-and-rank serves
it, scoring candidates from the sampling cache exactly as re-encoding them does. A folder that is
not a model, or lies outside the import roots, is refused with what is wrong and where, and
leaves nothing behind."""

from __future__ import annotations

import io
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from django.core.management import CommandError, call_command
from django.urls import reverse
from rest_framework.test import APIClient
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import nn
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from tests.trainer.helpers import TOPICS, labelled_campaigns
from trainer import causal_lm, inference, records, sampling
from trainer import tokenizer as tokenizers
from trainer.models import DatasetVersion, ModelVersion, TrainingJob
from trainer.services import dataset_builds, model_imports, requests

ARCHITECTURES = ("gpt2", "llama")
CONTEXTS = [
    [("user", "hello")],
    [
        ("user", "What do you think about cats? I like them"),
        ("model", "Cats are wonderful."),
        ("user", "Why?"),
    ],
    [("user", "Tell me about tea.")],
]
TEXTS = [
    "hello there, how are you?",
    "I like cats and dogs.",
    *(f"What do you think about {topic}? I read about {topic} every morning." for topic in TOPICS),
]


def lab_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE as a lab's model would have: its own end-of-text token, no pad token,
    none of Groundwork's tokens."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(TEXTS * 5, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="</s>", bos_token="</s>", clean_up_tokenization_spaces=False
    )


def lab_model(architecture: str, vocab_size: int, end: int) -> Any:
    """Weights drawn wider than a real initialisation's, so that what a token attends to, and at
    which position, shows in every probability (a near-uniform model would hide a wrong one)."""
    torch.manual_seed(0)
    if architecture == "gpt2":
        config: Any = GPT2Config(
            vocab_size=vocab_size,
            n_embd=32,
            n_layer=2,
            n_head=2,
            n_positions=512,
            initializer_range=0.3,
            bos_token_id=end,
            eos_token_id=end,
        )
        return GPT2LMHeadModel(config)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.3,
        bos_token_id=end,
        eos_token_id=end,
    )
    return LlamaForCausalLM(config)


def save_lab_model(folder: Path, architecture: str) -> Any:
    """A tiny random model of ``architecture`` and its tokenizer saved to ``folder``; the model."""
    tokenizer = lab_tokenizer()
    model = lab_model(architecture, len(tokenizer), tokenizer.eos_token_id)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return model


@pytest.fixture
def imports(settings: Any, tmp_path: Path) -> Path:
    """The one folder models may be imported from."""
    root = tmp_path / "imports"
    root.mkdir()
    settings.MODEL_IMPORT_ROOTS = [str(root)]
    return root


@pytest.fixture
def artifacts(settings: Any, tmp_path: Path) -> Path:
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    settings.ARTIFACTS_DIR.mkdir()
    return settings.ARTIFACTS_DIR


def left_behind(artifacts: Path) -> list[str]:
    models_dir = artifacts / "models"
    return sorted(p.name for p in models_dir.iterdir()) if models_dir.exists() else []


# --- importing ----------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_a_folder_is_imported_with_groundworks_tokens_and_loads_resized(
    architecture: str, imports: Path, artifacts: Path
) -> None:
    original = save_lab_model(imports / "lab-base", architecture)
    before = (imports / "lab-base" / "tokenizer.json").read_bytes()

    call_command("import_model", "lab-base", "--name", f"lab-{architecture}", stdout=io.StringIO())

    version = ModelVersion.objects.get(name=f"lab-{architecture}")
    assert (version.kind, version.source) == ("imported", str(imports / "lab-base"))
    assert version.path == artifacts / "models" / f"lab-{architecture}"
    assert left_behind(artifacts) == [f"lab-{architecture}"]  # no staging copy stays
    assert (imports / "lab-base" / "tokenizer.json").read_bytes() == before  # the source is untouched
    assert version.parameters == sum(p.numel() for p in original.parameters())
    assert version.config["model_type"] == architecture
    assert version.config["vocab_size"] == original.config.vocab_size
    assert version.config["added_tokens"] == list(tokenizers.SPECIAL_TOKENS)
    assert version.tokenizer_sha256 == dataset_builds.tokenizer_sha256(version.path)

    tokenizer = tokenizers.load(version.path)  # every Groundwork token is one id of its own
    assert len(tokenizer) == original.config.vocab_size + len(tokenizers.SPECIAL_TOKENS)
    assert tokenizer.pad_token == tokenizers.PAD
    text = " I like cats and dogs."
    assert tokenizer.encode(text, add_special_tokens=False) == lab_tokenizer().encode(
        text, add_special_tokens=False
    )
    model = causal_lm.load(version.path, tokenizer)
    assert type(model) is type(original)
    embeddings = model.get_input_embeddings().weight
    assert embeddings.shape[0] == len(tokenizer)
    # The model's own rows are kept; the new ones are the same at every load.
    assert torch.equal(embeddings[: original.config.vocab_size], original.get_input_embeddings().weight)
    assert torch.equal(causal_lm.load(version.path, tokenizer).get_input_embeddings().weight, embeddings)


def _remove(*names: str) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        for name in names:
            (folder / name).unlink()

    return change


def _corrupt_tokenizer(folder: Path) -> None:
    (folder / "tokenizer.json").write_text("{not json")


def _pickled_weights(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_remove("config.json"), "lab-base has no config.json"),
        (_remove("tokenizer.json", "tokenizer_config.json"), "lab-base has no tokenizer"),
        (_remove("model.safetensors"), "lab-base has no weights (model.safetensors)"),
        (_pickled_weights, "lab-base holds its weights as pytorch_model.bin, a pickle"),
        # Found wrong only once copied: the copy is removed again.
        (_corrupt_tokenizer, "the tokenizer in {folder} cannot be loaded"),
    ],
    ids=["no config", "no tokenizer", "no weights", "pickled weights", "broken tokenizer"],
)
def test_a_folder_that_is_not_a_model_is_refused_saying_what_and_where(
    imports: Path, artifacts: Path, change: Callable[[Path], None], expected: str
) -> None:
    folder = imports / "lab-base"
    save_lab_model(folder, "gpt2")
    change(folder)

    with pytest.raises(model_imports.ModelImportError) as refused:
        model_imports.model_import(folder=str(folder), name="lab")

    assert expected.format(folder=folder) in refused.value.message
    assert str(folder) in refused.value.message
    assert not ModelVersion.objects.exists()
    assert left_behind(artifacts) == []


@pytest.mark.django_db
def test_only_folders_under_the_import_roots_are_read(imports: Path, artifacts: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    save_lab_model(elsewhere, "gpt2")

    for folder in (str(elsewhere), "../elsewhere", "/etc"):
        with pytest.raises(
            model_imports.ModelImportError, match="is outside the folders models may be imported"
        ):
            model_imports.model_import(folder=folder, name="lab")
    # A link inside a root that leads out of it is refused too.
    linked = imports / "linked"
    linked.mkdir()
    for item in elsewhere.iterdir():
        (linked / item.name).symlink_to(item)
    with pytest.raises(model_imports.ModelImportError, match=r"linked/.* leads outside the folders"):
        model_imports.model_import(folder="linked", name="lab")
    with pytest.raises(model_imports.ModelImportError, match="there is no folder"):
        model_imports.model_import(folder="missing", name="lab")
    with pytest.raises(CommandError, match="is outside the folders models may be imported"):
        call_command("import_model", str(elsewhere), "--name", "lab")

    assert not ModelVersion.objects.exists()
    assert left_behind(artifacts) == []


@pytest.mark.django_db
def test_names_are_checked_before_anything_is_copied(imports: Path, artifacts: Path) -> None:
    save_lab_model(imports / "lab-base", "gpt2")
    model_imports.model_import(folder="lab-base", name="lab")

    for name, expected in [
        ("lab", "a model version named 'lab' exists already"),
        ("gw-3-pretrain", "names starting with 'gw-' are the trained versions'"),
        ("../up", "a model version's name is 1 to 100 letters"),
    ]:
        with pytest.raises(model_imports.ModelImportError, match=expected):
            model_imports.model_import(folder="lab-base", name=name)
    assert left_behind(artifacts) == ["lab"]


@pytest.mark.django_db
def test_researchers_import_through_the_api_and_the_admin(
    imports: Path, artifacts: Path, users: dict[Any, Any]
) -> None:
    save_lab_model(imports / "lab-base", "llama")
    researcher, admin = APIClient(), APIClient()
    researcher.force_login(users["researcher"])
    admin.force_login(users["admin"])

    refused = admin.post("/api/v1/models/import/", {"folder": "lab-base", "name": "lab"}, format="json")
    assert refused.status_code == 403
    answer = researcher.post("/api/v1/models/import/", {"folder": "lab-base", "name": "lab"}, format="json")
    assert answer.status_code == 201, answer.content
    assert (answer.json()["name"], answer.json()["kind"]) == ("lab", "imported")
    wrong = researcher.post("/api/v1/models/import/", {"folder": "/etc", "name": "etc"}, format="json")
    assert wrong.status_code == 400
    assert "/etc is outside the folders models may be imported from" in wrong.json()["folder"][0]

    page = researcher.post(
        reverse("admin:trainer_modelversion_add"), {"folder": "lab-base", "name": "lab-2"}, follow=True
    )
    assert "Model version lab-2 imported from" in page.content.decode()
    assert ModelVersion.objects.get(name="lab-2").kind == "imported"
    assert admin.get(reverse("admin:trainer_modelversion_add")).status_code == 403


@pytest.mark.django_db
def test_a_pretrain_job_from_an_imported_model_is_refused(imports: Path, artifacts: Path) -> None:
    save_lab_model(imports / "lab-base", "gpt2")
    version = model_imports.model_import(folder="lab-base", name="lab")
    dataset = DatasetVersion.objects.create(
        kind="pretrain", status="ready", tokenizer_sha256=version.tokenizer_sha256
    )

    with pytest.raises(requests.TrainerError, match="lab is an imported model, pre-trained elsewhere"):
        requests.training_request(kind="pretrain", datasets=[dataset], base_model=version, enqueue=False)
    with pytest.raises(requests.TrainerError, match="max_length 1024 is more than lab can attend to"):
        requests.training_request(
            kind="finetune_quality_safety",
            datasets=[DatasetVersion.objects.create(kind="quality_safety", status="ready")],
            base_model=version,
            hyperparameters={"max_length": 1024, "batch_size": 4},
            enqueue=False,
        )


# --- sample-and-rank ----------------------------------------------------------------------------


def _scores_by_reencoding(scorer: sampling.Scorer, sampled: sampling.Sampled) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in sampling.RANKED_ATTRIBUTES}
    for prompt, group in zip(sampled.prompts, sampled.candidates, strict=True):
        alone = scorer.score_by_reencoding(prompt, [c.ids for c in group], sampling.RANKED_ATTRIBUTES)
        for name in out:
            out[name] += alone[name]
    return out


@torch.no_grad()
def _log_likelihood_alone(model: Any, prompt: list[int], candidate: sampling.Candidate, eos: int) -> float:
    ids = [*prompt, *candidate.ids, *([eos] if candidate.finished else [])]
    log_probs = model(torch.tensor([ids]), use_cache=False).logits[0].float().log_softmax(-1)
    return sum(
        float(log_probs[len(prompt) - 1 + j, ids[len(prompt) + j]]) for j in range(len(ids) - len(prompt))
    )


def assert_cache_reuse_scores_as_re_encoding(scorer: sampling.Scorer) -> None:
    """Candidates of a padded batch scored from the sampling cache equal re-encoding each context
    and candidate alone (through a cache, and with no cache at all), and so do their
    log-likelihoods; a seeded answer is the same with and without cache reuse."""
    assert scorer.reuse_cache
    plain = sampling.Scorer(scorer.model, scorer.tokenizer, discriminators=True, reuse_cache=False)
    prompts = [scorer.prompt(context) for context in CONTEXTS]
    assert len({len(p) for p in prompts}) == len(prompts)  # every row but the longest is padded
    sampled = scorer.sample_batch(
        prompts, sampling.Settings(max_new_tokens=10), torch.Generator().manual_seed(1)
    )
    rows = [c for group in sampled.candidates for c in group]
    # Rows of different lengths share one cache; an untrained model seldom says <eos>, so some are
    # taken to have ended earlier, as with <eos>.
    lengths = [max(0, c.length - i % 4) for i, c in enumerate(rows)]
    assert len(set(lengths)) > 1
    for candidate, length in zip(rows, lengths, strict=True):
        candidate.ids = candidate.ids[:length]

    reused = scorer.score_with_cache(
        sampled.cache,
        sampled.prompt_length,
        lengths,
        sampling.RANKED_ATTRIBUTES,
        prompt_mask=sampled.prompt_mask,
    )
    for reference in (_scores_by_reencoding(scorer, sampled), _scores_by_reencoding(plain, sampled)):
        for name in sampling.RANKED_ATTRIBUTES:
            assert reused[name] == pytest.approx(reference[name], abs=1e-5)
    again = scorer.sample_batch(
        prompts, sampling.Settings(max_new_tokens=10), torch.Generator().manual_seed(1)
    )
    for prompt, group in zip(prompts, again.candidates, strict=True):
        for candidate in group[:4]:
            assert candidate.log_likelihood == pytest.approx(
                _log_likelihood_alone(scorer.model, prompt, candidate, scorer.eos), abs=1e-3
            )

    settings = sampling.Settings(max_new_tokens=8, safety_threshold=0.0)
    with_cache = scorer.respond_batch(CONTEXTS, settings, seed=3)
    without = plain.respond_batch(CONTEXTS, settings, seed=3)
    assert [a.chosen for a in with_cache] == [a.chosen for a in without]
    for a, b in zip(with_cache, without, strict=True):
        for x, y in zip(a.candidates, b.candidates, strict=True):
            assert x.text == y.text
            assert x.scores == pytest.approx(y.scores, abs=1e-5)


@pytest.mark.django_db
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_an_imported_model_is_scored_from_the_sampling_cache_as_by_re_encoding(
    architecture: str, imports: Path, artifacts: Path
) -> None:
    save_lab_model(imports / "lab-base", architecture)
    version = model_imports.model_import(folder="lab-base", name="lab")
    tokenizer = tokenizers.load(version.path)

    assert_cache_reuse_scores_as_re_encoding(
        sampling.Scorer(causal_lm.load(version.path, tokenizer), tokenizer, discriminators=True)
    )


class _NoPositions(nn.Module):
    """A transformers model whose decoder takes no ``position_ids`` (as some architectures)."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner, self.config = inner, inner.config
        self.base_model = _Decoder(inner.base_model)

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> Any:
        assert "position_ids" not in kwargs
        return self.inner(input_ids, **kwargs)

    def get_output_embeddings(self) -> nn.Module:
        return self.inner.get_output_embeddings()


class _Decoder(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids: torch.Tensor, cache: Any = None, use_cache: bool | None = None) -> Any:
        return self.inner(input_ids, cache=cache, use_cache=use_cache)


@pytest.mark.django_db
def test_a_model_without_position_ids_samples_each_context_alone_and_is_scored_by_re_encoding(
    imports: Path, artifacts: Path
) -> None:
    save_lab_model(imports / "lab-base", "gpt2")
    version = model_imports.model_import(folder="lab-base", name="lab")
    tokenizer = tokenizers.load(version.path)
    model = causal_lm.load(version.path, tokenizer)
    scorer = sampling.Scorer(_NoPositions(model), tokenizer, discriminators=True)
    assert not scorer.reuse_cache
    settings = sampling.Settings(max_new_tokens=8, safety_threshold=0.0)

    batch = scorer.respond_batch(CONTEXTS, settings, seed=4)
    first = scorer.respond(CONTEXTS[0], settings, seed=4)

    assert [c.text for c in batch[0].candidates] == [c.text for c in first.candidates]
    reference = sampling.Scorer(model, tokenizer, discriminators=True)  # the same weights, with positions
    for context, answer in zip(CONTEXTS, batch, strict=True):
        scores = reference.score_by_reencoding(
            reference.prompt(context), [c.ids for c in answer.candidates], sampling.RANKED_ATTRIBUTES
        )
        for row, candidate in enumerate(answer.candidates):
            assert candidate.scores == pytest.approx({n: scores[n][row] for n in scores}, abs=1e-5)


# --- fine-tuning on the real worker, then serving -----------------------------------------------


def wait_for(condition: Callable[[], Any], timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("timed out waiting for the training job")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_an_imported_model_is_fine_tuned_on_the_worker_and_served_by_sample_and_rank(
    architecture: str, imports: Path, training_worker: subprocess.Popen, users: dict[Any, Any], client: Any
) -> None:
    # The worker reads the session's artifacts folder: the version's name is this run's own.
    save_lab_model(imports / "lab-base", architecture)
    base = model_imports.model_import(folder="lab-base", name=f"lab-{architecture}-{uuid.uuid4().hex[:8]}")
    ssi, safety = labelled_campaigns(items=12, unsafe=(0, 3))
    dataset = requests.dataset_request(
        kind="quality_safety",
        campaigns=[ssi, safety],
        tokenizer_source=base,
        validation_percent=50,
        enqueue=False,
    )
    dataset = dataset_builds.dataset_build(dataset_id=dataset.pk)
    assert dataset.status == "ready", dataset.error
    assert dataset.tokenizer_sha256 == base.tokenizer_sha256
    example = next(iter(records.read_rows(dataset.path, "train", ("input_ids",))))["input_ids"]
    assert max(example) < len(tokenizers.load(base.path))

    job = requests.training_request(
        kind="finetune_quality_safety",
        datasets=[dataset],
        base_model=base,
        hyperparameters={"steps": 3, "checkpoint_every": 3, "report_every": 0.2},
    )
    job = wait_for(lambda: (j := TrainingJob.objects.get(pk=job.pk)).finished and j)

    assert job.status == "succeeded", job.error + job.log + training_worker.log.read_text()[-3000:]
    version = ModelVersion.objects.get(job=job)
    tokenizer = tokenizers.load(version.path)
    assert (version.kind, version.parent) == ("trained", base)
    assert version.config["model_type"] == architecture
    assert version.config["vocab_size"] == len(tokenizer)  # the embeddings now have Groundwork's tokens
    assert version.tokenizer_sha256 == base.tokenizer_sha256
    assert set(version.metrics["final"]["attributes"]) == {"SENSIBLE", "SPECIFIC", "INTERESTING", "UNSAFE"}

    client.force_login(users["researcher"])
    for page in (
        reverse("admin:trainer_trainingjob_change", args=[job.pk]),
        reverse("admin:trainer_modelversion_change", args=[version.pk]),
        reverse("admin:trainer_modelversion_change", args=[base.pk]),
    ):
        assert client.get(page).status_code == 200, page

    scorer = inference.scorer_for(version)  # what serves chats and evaluations
    assert scorer.discriminators
    assert_cache_reuse_scores_as_re_encoding(scorer)
