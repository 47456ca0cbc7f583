"""The recipe's data configs in their canonical (Olive 0.7–0.13) shape.

Older spellings (`params`, `params_config`, `component_kwargs`, `corpus_strategy`, `source_max_len`)
are rewritten into this shape by `generations.py` before these models see them.
"""

from __future__ import annotations

import string
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from slmforge.data.hub import FILE_FORMATS, is_hub_name
from slmforge.recipe.azure import AzureMLDatastoreFiles
from slmforge.recipe.base import NOT_SUPPORTED, Strict, olive_choice, refuse_text


class LoadDatasetConfig(Strict):
    type: Literal["huggingface_dataset"] | None = Field(None, description="Olive's own loader (a user function: "
                                                        "its name in user_script)")
    data_name: str = Field("json", description="file format (json, csv, parquet) of data_files, or a Hugging Face "
                           "Hub dataset id such as 'tatsu-lab/alpaca'")
    data_files: str | Annotated[list[str], Field(min_length=1, max_length=1)] | AzureMLDatastoreFiles | None = Field(
        None, description="local path or datastore file (or a list of one path, as `olive finetune` writes); "
                          "required with a file format, left out with a hub dataset",
        examples=["../src/slmforge/data/tones-train.jsonl"])
    split: str = Field("train", description="split to read, or a slice of it: 'train[:4096]', 'train[:10%]' (a hub "
                       "dataset without a split reads 'validation', as in Olive)",
                       examples=["train[:10%]"])
    subset: str | None = Field(None, description="hub dataset: the configuration (subset) to read")
    data_dir: str | None = Field(None, description="hub dataset: the folder of the repository to read")
    revision: str | None = Field(None, description="hub dataset: branch, tag or commit (default: main)")
    col_filters: dict[str, str | int | float | bool] | None = Field(
        None, description="keep only the rows whose column equals the value, e.g. {'programming_language': 'Python'}")
    trust_remote_code: Literal[False] = Field(False, description="slmforge runs no dataset scripts")

    @field_validator("data_files", mode="before")
    @classmethod
    def _one_file(cls, value: Any) -> Any:
        """Olive takes a list (`olive finetune --data_files a,b`): one file is that file."""
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
            return value[0]
        if isinstance(value, list):
            raise ValueError(f"several data files are {NOT_SUPPORTED} (give one file)")
        return value

    @field_validator("trust_remote_code", mode="before")
    @classmethod
    def _no_scripts(cls, value: Any) -> Any:
        if value is True:
            raise ValueError("true is refused: slmforge runs no dataset scripts (it reads the parquet, JSON or "
                             "CSV files of a hub dataset's repository)")
        return value

    @field_validator("data_name")
    @classmethod
    def _name(cls, value: str) -> str:
        if value not in FILE_FORMATS and not is_hub_name(value):
            raise ValueError(f"'{value}' is neither a file format ({', '.join(FILE_FORMATS)}) nor a Hugging Face "
                             "Hub dataset id (NAME or ORG/NAME)")
        return value

    @model_validator(mode="after")
    def _files_or_hub(self) -> "LoadDatasetConfig":
        hub_keys = [k for k in ("subset", "data_dir", "revision") if getattr(self, k) is not None]
        if not self.is_hub:
            if self.data_files is None:
                raise ValueError(f"data_name '{self.data_name}' reads data_files: give data_files, or a hub dataset "
                                 "id as data_name")
            if hub_keys:
                raise ValueError(f"'{hub_keys[0]}' applies to a hub dataset; data_name '{self.data_name}' reads "
                                 "data_files")
        elif self.data_files is not None:
            raise ValueError(f"data_files with hub dataset '{self.data_name}' is {NOT_SUPPORTED}: choose its files "
                             "with subset, data_dir and split")
        return self

    @property
    def is_hub(self) -> bool:
        """True when data_name names a Hugging Face Hub dataset rather than a file format."""
        return self.data_name not in FILE_FORMATS


class PreProcessConfig(Strict):
    type: Literal["text_generation_huggingface_pre_process", "huggingface_pre_process"] | None = Field(
        None, description="Olive's text-generation pre-processing (a user function: its name in user_script)")
    dataset_type: Literal["corpus"] = Field("corpus", description="the Cookbook's; Olive 0.7+ leaves it out")
    text_template: str | None = Field(None, description="e.g. '### Text: {phrase}\\n### The tone is:\\n{tone}'")
    text_cols: list[str] | str | None = Field(None, description="columns the template reads (default: its placeholders)")
    strategy: Literal["join", "line-by-line"] = Field("join", description="the Cookbook: corpus_strategy")
    max_seq_len: int = Field(1024, gt=0, description="tokens per training example (the Cookbook: source_max_len)")
    pad_to_max_len: bool = Field(False, description="pad every example to max_seq_len (padding is not learned)")
    add_special_tokens: Literal[True] = Field(True, description="the tokenizer's special tokens (e.g. <s>) are added")
    use_attention_mask: bool = Field(True, description="give the model an attention mask (false: all ones)")
    loss_on: Literal["all", "completion"] = Field(
        "all", description="slmforge: 'completion': loss only on the text after the template's last placeholder"
    )
    max_samples: int | None = Field(None, gt=0, description="use only the first N rows")
    chat_template: bool = Field(False, description="rows are {\"messages\": [{role, content}, ...]} conversations "
                                "rendered with the tokenizer's own chat template; the loss is on the assistant turns")

    _strategy = field_validator("strategy", mode="before")(
        olive_choice(("join", "line-by-line"), ("line-by-line-random", "join-random", "join-sliding-window"),
                     "the random and sliding-window strategies are not implemented"))
    _special = field_validator("add_special_tokens", mode="before")(
        olive_choice((True,), (False,), "every example starts with the tokenizer's special tokens"))

    _tokenizers_template = field_validator("chat_template", mode="before")(refuse_text(
        lambda _: f"a chat template of the recipe's own is {NOT_SUPPORTED}; chat_template: true renders the rows "
        "with the tokenizer's own"))

    @model_validator(mode="after")
    def _has_template(self) -> "PreProcessConfig":
        if self.chat_template:
            if self.text_template is not None or self.text_cols is not None:
                raise ValueError("chat_template renders whole conversations (the 'messages' column): "
                                 "give it without text_template and text_cols")
            if "loss_on" not in self.model_fields_set:
                self.loss_on = "completion"  # a chat row's completion: its assistant turns
            return self
        if self.text_template is None:
            # Olive's text-generation default: the text columns ("text" unless named), joined by a space,
            # learned whole. The template's last column is then the "answer" the evaluation continues.
            cols = [self.text_cols] if isinstance(self.text_cols, str) else list(self.text_cols or ["text"])
            self.text_template = " ".join("{" + c + "}" for c in cols)
            self.text_cols = cols
        # One meaning, one value: Olive 0.13 without text_cols reads the template's placeholders.
        if isinstance(self.text_cols, str):
            self.text_cols = [self.text_cols]
        elif self.text_cols is None:
            try:
                names = [n for _, n, _, _ in string.Formatter().parse(self.text_template) if n is not None]
            except ValueError:
                names = []  # checks.py reports the broken template
            self.text_cols = list(dict.fromkeys(names))
        return self

    @property
    def columns(self) -> list[str]:
        """The columns read: text_cols, or (without text_cols) the template's placeholders; chat: messages."""
        return ["messages"] if self.chat_template else list(self.text_cols or [])

    @property
    def step_spec(self) -> dict[str, Any]:
        """What the load_data step reads as its --spec."""
        if self.chat_template:
            return {"chat": True}
        return {"text_cols": self.columns, "text_template": self.text_template}


# Olive's own component types that slmforge does not run, by kind (olive/data/component/, 0.4 to 0.9).
OLIVE_BUILTINS = {
    "load_dataset": ("local_dataset", "simple_dataset", "default_load_dataset", "dummy_dataset", "raw_dataset",
                     "transformers_dummy_dataset", "transformers_prompt_dummy_dataset",
                     "transformers_token_dummy_dataset"),
    "pre_process_data": ("pre_process", "skip_pre_process", "default_pre_process_data", "ner_huggingface_preprocess",
                         "audio_classification_pre_process"),
}


class UserComponent(Strict):
    """A data component naming a function of the recipe's `user_script`: its `type` (the registered or
    defined name) and the keyword arguments it is called with (Olive 0.6's `params`, flattened)."""

    model_config = ConfigDict(extra="allow", strict=True)
    kind: ClassVar[str]
    type: str = Field(min_length=1, description="a function of user_script (registered under this name, or so named)")

    @field_validator("type")
    @classmethod
    def _not_olive_own(cls, value: str) -> str:
        if value.lower() in OLIVE_BUILTINS.get(cls.kind, ()):
            raise ValueError(f"'{value}' (one of Olive's own {cls.kind} components) is {NOT_SUPPORTED}: slmforge "
                             "reads local files and datastores, or a function of the recipe's user_script")
        return value

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class UserLoadDataset(UserComponent):
    kind: ClassVar[str] = "load_dataset"


class UserPreProcess(UserComponent):
    kind: ClassVar[str] = "pre_process_data"


def _slmforge_or_user(own: tuple[str, ...]):
    def pick(value: Any) -> str:
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        return "own" if kind is None or (isinstance(kind, str) and kind.lower() in own) else "user"

    return Discriminator(pick)


class DataConfig(Strict):
    name: str = Field(min_length=1, description="the name passes and evaluate refer to", examples=["tones"])
    type: Literal["HuggingfaceContainer"] = Field("HuggingfaceContainer", description="Olive's data container: "
                                                  "the one slmforge reads")
    user_script: str | None = Field(None, description="Python file whose functions the components' 'type' name "
                                    "(relative to script_dir, else to the recipe file)")
    script_dir: str | None = Field(None, description="folder put first on sys.path while user_script runs")
    load_dataset_config: Annotated[Union[Annotated[LoadDatasetConfig, Tag("own")],
                                         Annotated[UserLoadDataset, Tag("user")]],
                                   _slmforge_or_user(("huggingface_dataset",))] = Field(
        description="where the rows come from: a local file, a datastore file or a hub dataset (or a user function)")
    pre_process_data_config: Annotated[Union[Annotated[PreProcessConfig, Tag("own")],
                                             Annotated[UserPreProcess, Tag("user")]],
                                       _slmforge_or_user(("text_generation_huggingface_pre_process",
                                                          "huggingface_pre_process"))] = Field(
        default_factory=PreProcessConfig, description="Olive's default: the 'text' column, learned whole")

    @property
    def user_components(self) -> dict[str, UserComponent]:
        """The components that name a user_script function, by kind."""
        return {c.kind: c for c in (self.load_dataset_config, self.pre_process_data_config)
                if isinstance(c, UserComponent)}
