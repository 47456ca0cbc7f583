"""A fine-tune pass's `training_args`: every Hugging Face TrainingArguments name is known.

The names slmforge honours are generated from training/args.py (the finetune step's parameters, the
one definition); the recipe-side ones are fields here; every other HF name is a field of type Any whose
class and reason come from training/hf_args.py's table: an ignored one is accepted and named by
`slmforge validate`, a refused one is an error unless its value asks for nothing. A name that is not
HF's stays "unknown key", with a "did you mean" among these real names.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, create_model, field_validator, model_validator

from slmforge.contract.params import pydantic_fields
from slmforge.recipe.base import Strict, olive_choice, refuse_text
from slmforge.training import hf_args, tracking
from slmforge.training.args import EVAL_STRATEGIES, STEP_COUNTS, TrainArgs, args_problem

SAMPLING = ("random", "group_by_length")
_OTHER = {name: (Any, Field(None, description=f"{rule.kind}: {rule.reason}"))
          for name, rule in hf_args.TABLE.items() if rule.kind != hf_args.HONOURED}
_REFUSED = hf_args.not_honoured(hf_args.REFUSED)


class TrainingArgs(create_model("TrainArgsFields", __base__=Strict,
                                **pydantic_fields(TrainArgs, exclude=("eval_strategy",)), **_OTHER)):
    """Hugging Face TrainingArguments: the finetune step's (training/args.py), the recipe-side names,
    and every other HF name as training/hf_args.py classes it. Olive's `extra_args` is read as its keys."""

    data_seed: int | None = Field(None, description="seed of the held-out split (default: seed)")
    evaluation_strategy: Literal[EVAL_STRATEGIES] | None = Field(None, description="older name of eval_strategy")
    eval_strategy: Literal[EVAL_STRATEGIES] | None = Field(None, description="when to compute the eval loss")
    activation_checkpointing: bool | None = Field(None, description="transformers 5's name of gradient_checkpointing")
    train_sampling_strategy: str | None = Field(None, description="'group_by_length' sets group_by_length")
    resume_from_checkpoint: bool | str | None = Field(
        None, description="true or false: slmforge resumes from its newest matching checkpoint anyway")
    report_to: str | list[str] | None = Field(None, description=tracking.REPORT_TO_HELP,
                                              examples=["mlflow", ["mlflow", "tensorboard"], "none"])

    @model_validator(mode="before")
    @classmethod
    def _extra_args(cls, data: Any) -> Any:
        """Olive's HFTrainingArguments takes any TrainingArguments key inside `extra_args` too."""
        if not isinstance(data, dict) or not isinstance(data.get("extra_args"), dict):
            return data
        data = dict(data)
        extra = data.pop("extra_args")
        both = sorted(set(extra) & set(data))
        if both:
            raise ValueError(f"'{both[0]}' is given both in extra_args and beside it; keep one")
        return {**data, **extra}

    @field_validator(*_REFUSED, mode="before")
    @classmethod
    def _refused(cls, value: Any, info: ValidationInfo) -> Any:
        rule = hf_args.TABLE[info.field_name]
        if not rule.asks_for_nothing(value):
            raise ValueError(f"slmforge cannot honour {info.field_name}={value!r}: {rule.reason}")
        return value

    _sampling = field_validator("train_sampling_strategy", mode="before")(
        olive_choice(SAMPLING, ("sequential",), "slmforge's batch order is a seeded shuffle"))

    _resume = field_validator("resume_from_checkpoint")(refuse_text(
        lambda value: f"slmforge cannot resume from {value!r}: it resumes from its own checkpoints folder (the "
        "newest checkpoint made by the same run), so give true, false or leave it out"))

    @field_validator("report_to")
    @classmethod
    def _report_to(cls, value: Any) -> Any:
        tracking.report_names(value)  # ValueError naming the allowed ones
        return value

    @model_validator(mode="after")
    def _rules(self) -> "TrainingArgs":
        a, b = self.evaluation_strategy, self.eval_strategy
        if a is not None and b is not None and a != b:
            raise ValueError("'evaluation_strategy' and 'eval_strategy' disagree; give one")
        pairs = (("gradient_checkpointing", "activation_checkpointing"),
                 ("group_by_length", "train_sampling_strategy"))
        for old, new in pairs:
            if {old, new} <= self.model_fields_set and getattr(self, old) != self._from(new):
                raise ValueError(f"'{old}' and '{new}' disagree; give one")
        values = {k: getattr(self, k) for k in (*STEP_COUNTS, "bf16", "fp16", "load_best_model_at_end")}
        problem = args_problem(values, self.effective_eval_strategy)
        if problem:
            raise ValueError(problem)
        return self

    def _from(self, new: str) -> bool:
        if new == "activation_checkpointing":
            return bool(self.activation_checkpointing)
        return self.train_sampling_strategy == "group_by_length"

    @property
    def effective_eval_strategy(self) -> str:
        return self.eval_strategy or self.evaluation_strategy or "no"

    def step_params(self) -> dict[str, Any]:
        """The finetune step's training parameters this recipe sets."""
        step_fields = set(TrainArgs.__dataclass_fields__)
        params = {k: v for k, v in self.model_dump(include=step_fields - {"eval_strategy"}).items() if v is not None}
        params["eval_strategy"] = self.effective_eval_strategy
        if "activation_checkpointing" in self.model_fields_set:
            params["gradient_checkpointing"] = self._from("activation_checkpointing")
        if "train_sampling_strategy" in self.model_fields_set:
            params["group_by_length"] = self._from("train_sampling_strategy")
        return params

    def notes(self) -> list[tuple[str, str]]:
        """(key, what slmforge does with it) for each key given that is accepted but not a step parameter."""
        out = []
        for name in sorted(self.model_fields_set):
            rule = hf_args.TABLE.get(name)
            if rule is not None and rule.kind != hf_args.HONOURED:
                out.append((name, f"ignored: {rule.reason}"))
            elif name in ("report_to", "resume_from_checkpoint"):
                out.append((name, f"accepted: {rule.reason}"))
        return out
