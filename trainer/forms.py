"""The researcher's forms: export a dataset, retrain a model, evaluate a model version. They only
validate; the admin views hand ``service_kwargs()`` to the services (``requests.dataset_request``,
``requests.training_request``, ``evaluations.evaluation_request``)."""

from __future__ import annotations

from typing import Any

from django import forms

from annotation.models import Campaign
from dialogs.models import EvaluationSet, Purpose
from trainer import preference_sources, sizing, sources
from trainer.hyperparameters import BOUNDS, DEFAULT_PRESET, MODEL_PRESETS
from trainer.models import DatasetVersion, ModelVersion, TrainingJob

TRAINING_CAMPAIGN_KINDS = tuple(
    dict.fromkeys(
        (
            *sources.QUALITY_SAFETY_CAMPAIGNS,
            *sources.GROUNDEDNESS_CAMPAIGNS,
            *preference_sources.PREFERENCE_CAMPAIGNS,
        )
    )
)


class ModelVersionChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: ModelVersion) -> str:
        return f"{obj.name} (serving)" if obj.serving else obj.name


class DatasetChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: DatasetVersion) -> str:
        splits = (obj.counts or {}).get("splits") or {}
        examples = sum(sum(kinds.values()) for kinds in splits.values() if isinstance(kinds, dict))
        return (
            f"#{obj.pk} {obj.get_kind_display()} · {examples} examples · "
            f"tokenizer {obj.tokenizer_sha256[:8] or '?'} · {obj.created_at:%Y-%m-%d %H:%M}"
        )


class DatasetExportForm(forms.Form):
    """A new dataset version: which campaigns (or dialogs, for pretrain) and how it is rendered."""

    kind = forms.ChoiceField(choices=DatasetVersion.Kind.choices)
    campaigns = forms.ModelMultipleChoiceField(
        Campaign.objects.filter(kind__in=TRAINING_CAMPAIGN_KINDS).order_by("-created_at", "-id"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=(
            "Quality and safety: SSI, safety and groundedness-evaluation campaigns (their consensus "
            "labels). Groundedness: rewrite campaigns. Preference: SSI, safety, rewrite and "
            "side-by-side campaigns (pairs and KTO rows). Pre-training: none (it is made from dialogs)."
        ),
    )
    tokenizer_source = ModelVersionChoiceField(
        ModelVersion.objects.order_by("-serving", "-created_at", "-id"),
        required=False,
        empty_label="The serving model (pre-training: a new tokenizer trained on the dialogs)",
        label="Tokenizer of",
        help_text="The model version whose tokenizer renders the examples; fine-tune it with this dataset.",
    )
    validation_percent = forms.IntegerField(
        min_value=0,
        max_value=50,
        initial=10,
        help_text="Share of dialogs held out for validation (split by dialog).",
    )
    purposes = forms.MultipleChoiceField(
        choices=Purpose.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Dialog purposes",
        help_text="Pre-training only. None chosen: every dialog.",
    )
    model_versions = forms.CharField(
        required=False,
        max_length=2000,
        label="Model versions",
        help_text="Pre-training and filtered only, comma-separated: only the model turns these model "
        "versions wrote become examples. Blank: every turn.",
    )

    # Filtered datasets: the least probability a kept turn has of each (METHOD.md §6).
    threshold_safe = forms.FloatField(
        min_value=0, max_value=1, initial=0.5, required=False, label="Least P(safe)"
    )
    threshold_sensible = forms.FloatField(
        min_value=0, max_value=1, initial=0.5, required=False, label="Least P(sensible)"
    )
    threshold_specific = forms.FloatField(
        min_value=0, max_value=1, initial=0.5, required=False, label="Least P(specific)"
    )
    threshold_interesting = forms.FloatField(
        min_value=0, max_value=1, initial=0.5, required=False, label="Least P(interesting)"
    )
    THRESHOLDS = ("safe", "sensible", "specific", "interesting")

    def service_kwargs(self) -> dict[str, Any]:
        """The arguments of ``requests.dataset_request`` (but ``created_by``)."""
        data = self.cleaned_data
        kwargs = {
            "kind": data["kind"],
            "campaigns": list(data["campaigns"]),
            "tokenizer_source": data["tokenizer_source"],
            "purposes": list(data["purposes"]),
            "model_versions": [name.strip() for name in data["model_versions"].split(",") if name.strip()],
            "validation_percent": data["validation_percent"],
        }
        if data["kind"] == DatasetVersion.Kind.FILTERED:
            kwargs["thresholds"] = {  # a blank one keeps the service's default
                name: data[f"threshold_{name}"]
                for name in self.THRESHOLDS
                if data[f"threshold_{name}"] is not None
            }
        return kwargs


def preset_choices() -> list[tuple[str, str]]:
    """The model presets, each with its parameters and estimated memory for a step of the form's
    default batch (16 × 256 tokens, fp32) at the default vocabulary of 8192."""
    choices = [("", f"Default: {DEFAULT_PRESET} for a new model; a fine-tune keeps its base model's size")]
    for name, sizes in MODEL_PRESETS.items():
        config = {**sizing.DEFAULTS, **sizes}
        memory = sizing.training_memory_bytes(config, batch_size=16, seq_len=256)
        choices.append(
            (
                name,
                f"{name}: {sizing.human_count(sizing.parameter_count(config))} parameters, "
                f"d_model {sizes['d_model']}, {sizes['n_layer']} layers, {sizes['n_head']} heads, "
                f"d_ff {sizes['d_ff']} (~{sizing.human_bytes(memory)} to train 16 × 256 tokens in fp32)",
            )
        )
    return choices


class TrainingJobForm(forms.Form):
    """A new training job: pre-train a model, or fine-tune a base model on ready datasets."""

    kind = forms.ChoiceField(choices=TrainingJob.Kind.choices)
    base_model = ModelVersionChoiceField(
        ModelVersion.objects.order_by("-serving", "-created_at", "-id"),
        required=False,
        empty_label="The serving model (pre-training: none, a new model)",
        help_text="The version a fine-tune starts from; its tokenizer must be the datasets' tokenizer.",
    )
    datasets = DatasetChoiceField(
        DatasetVersion.objects.filter(status=DatasetVersion.Status.READY).order_by("-created_at", "-id"),
        widget=forms.CheckboxSelectMultiple,
        help_text="Ready datasets of the kind the job trains on, rendered with one tokenizer.",
    )
    preset = forms.ChoiceField(
        choices=preset_choices,
        required=False,
        label="Model size",
        help_text="Pre-training only: the size of the new model (trainer.hyperparameters.MODEL_PRESETS). "
        "Parameters with a vocabulary of 8192; the job page shows the count and memory for its own.",
    )
    # The bounds every training job has (trainer.hyperparameters.BOUNDS).
    steps = forms.IntegerField(min_value=BOUNDS["steps"][0], max_value=BOUNDS["steps"][1], initial=200)
    learning_rate = forms.FloatField(
        min_value=BOUNDS["learning_rate"][0], max_value=BOUNDS["learning_rate"][1], initial=1e-3
    )
    batch_size = forms.IntegerField(
        min_value=BOUNDS["batch_size"][0], max_value=BOUNDS["batch_size"][1], initial=16
    )
    checkpoint_every = forms.IntegerField(
        min_value=BOUNDS["checkpoint_every"][0],
        max_value=BOUNDS["checkpoint_every"][1],
        initial=50,
        help_text="Steps between checkpoints (resume points).",
    )
    seed = forms.IntegerField(
        min_value=BOUNDS["seed"][0],
        max_value=BOUNDS["seed"][1],
        required=False,
        initial=0,
        help_text="Seeds a new model's initial weights, the batch order and dropout: the same datasets "
        "and hyperparameters give the same model.",
    )
    qs_mix_share = forms.FloatField(
        min_value=BOUNDS["qs_mix_share"][0],
        max_value=BOUNDS["qs_mix_share"][1],
        required=False,
        initial=0.2,
        label="Quality-safety mix share",
        help_text="Groundedness fine-tunes only: the share of the base model's quality-safety training "
        "examples mixed in, so its discriminators are kept (0: none).",
    )
    dpo_beta = forms.FloatField(
        min_value=BOUNDS["dpo_beta"][0],
        max_value=BOUNDS["dpo_beta"][1],
        required=False,
        initial=0.1,
        label="DPO β",
        help_text="Preference fine-tunes only: how far the model may move from its base model for a "
        "given preference margin (DPO's β).",
    )
    OPTIONAL_HYPERPARAMETERS = ("seed", "qs_mix_share", "dpo_beta")  # blank: the job's default

    def service_kwargs(self) -> dict[str, Any]:
        """The arguments of ``requests.training_request`` (but ``created_by``): a preset goes as
        ``hyperparameters.preset`` (the service refuses one for a fine-tune)."""
        data = self.cleaned_data
        return {
            "kind": data["kind"],
            "datasets": list(data["datasets"]),
            "base_model": data["base_model"],
            "hyperparameters": {
                "steps": data["steps"],
                "learning_rate": data["learning_rate"],
                "batch_size": data["batch_size"],
                "checkpoint_every": data["checkpoint_every"],
                **{name: data[name] for name in self.OPTIONAL_HYPERPARAMETERS if data.get(name) is not None},
                **({"preset": data["preset"]} if data.get("preset") else {}),
            },
        }


class EvaluationSetChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: EvaluationSet) -> str:
        return f"{obj} · {obj.context_count} contexts{' · locked' if obj.locked else ''}"


class EvaluationForm(forms.Form):
    """A model version to answer an evaluation set (``evaluations.evaluation_request``)."""

    evaluation_set = EvaluationSetChoiceField(
        EvaluationSet.objects.order_by("name", "-version"),
        help_text="The version answers every context of the set; the set is locked from now on.",
    )
    model_version = ModelVersionChoiceField(ModelVersion.objects.order_by("-serving", "-created_at", "-id"))

    def service_kwargs(self) -> dict[str, Any]:
        """The arguments of ``evaluations.evaluation_request`` (but ``requested_by``)."""
        return {
            "evaluation_set": self.cleaned_data["evaluation_set"],
            "model_version": self.cleaned_data["model_version"],
        }


class ModelImportForm(forms.Form):
    """A base model of the lab's own: a transformers causal LM folder on the server, imported
    (``model_imports.model_import``)."""

    folder = forms.CharField(
        max_length=500,
        help_text=(
            "A folder on the server under MODEL_IMPORT_ROOTS (default: the artifacts folder's "
            "imports/; a relative path starts there) with config.json, model.safetensors and the "
            "tokenizer, as save_pretrained writes them. It is copied; nothing is downloaded."
        ),
    )
    name = forms.CharField(
        max_length=ModelVersion._meta.get_field("name").max_length,
        help_text="The new model version's name: letters, digits, '.', '_' or '-'.",
    )

    def service_kwargs(self) -> dict[str, Any]:
        """The arguments of ``model_imports.model_import`` (but ``created_by``)."""
        return {"folder": self.cleaned_data["folder"], "name": self.cleaned_data["name"]}
