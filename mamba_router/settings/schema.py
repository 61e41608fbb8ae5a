"""The configuration of every part of mamba-router: one schema of sections, one optional file, the environment.

Precedence, lowest first: defaults < the file < environment variables < arguments (:mod:`.loader`).
:func:`load_config` keeps where every value came from, which ``mamba-router config --show`` prints. A new part of
the library (the server, a cluster) adds its section here and reads it the same way.

The file::

    [model_routing]
    enable_mamba = true            # false: every request goes to the Transformer
    long_context_tokens = 4096     # the long-context rule fires above this many tokens (context + query)
    min_pages = 3                  # the multi-page rule fires at this many pages or more
    legal_keywords = ["judgment", "judgement", "order", "case", "appeal", "petition", "plaint", "decree",
                      "writ", "bench", "section"]
    rules = ["long_context", "multi_page", "legal_keywords"]   # the rules that are on
    token_counting = "auto"        # auto: the model's tokenizer where it is on disk, else the estimate
    truncation = "off"             # off: too long for the Transformer is an error; keep_start / keep_end

    [mamba]
    backend = "auto"               # or real-mamba, mamba2; "transformer" sends everything to the Transformer
    prefer_real = true             # false: use the pure-PyTorch mamba2 backend wherever it can run
    real_model = "ibm-granite/granite-4.0-h-350m"      # instruct hybrid (Mamba-2 + attention); base research
    mamba2_model = "ibm-granite/granite-4.0-h-350m"    #   models: state-spaces/mamba-130m, state-spaces/mamba2-130m
    fallback = true                # false: no Transformer fallback; a Mamba problem is an error
    state_cache_bytes = 1073741824 # documents read by Mamba keep their state for the next question; 0: off

    [transformer]
    model = "ibm-granite/granite-4.0-350m"   # the dense twin: same family, tokenizer and instruct training

    [generation]
    max_new_tokens = 256
    device = "auto"
    dtype = "auto"

    [log]
    enabled = true
    path = "~/.local/state/mamba-router/routing.jsonl"
    log_text = false               # true: also store query, context and answer text
    max_bytes = 10485760           # rotate above this size
    backups = 3                    # rotated files kept: routing.jsonl.1 ... .3
    required = false               # true: an answer whose record cannot be written is a RoutingLogError

    [limits]                       # the largest request accepted where input enters (Router, HTTP apps)
    max_query_chars = 100000       # characters of one question
    max_context_chars = 20000000   # characters of all documents of one request (about 5M tokens)
    max_pages = 1000000            # the largest page count a caller may give
    max_batch = 10000              # requests in one route_batch call
    max_body_bytes = 33554432      # an HTTP request body (32 MiB); larger ones get 413 before they are parsed

    [lora]                         # LoRA training (see mamba_router.lora.config); also read from its own file
    r = 8

    [remote]                       # OpenAI-compatible servers (vLLM, SGLang, mamba-router serve) as targets
    connect_timeout_s = 5
    read_timeout_s = 120           # the longest wait for the next bytes of an answer
    retries = 2                    # more attempts per request, each on the next endpoint
    backoff_s = 0.25               # wait before a retry, doubled each time
    cooldown_s = 30                # an endpoint that failed is skipped this long (a 429's Retry-After if longer)

    [[remote.mamba]]               # endpoints that answer as the Mamba family (tried before local backends)
    url = "http://10.0.0.7:8000/v1"
    model = "tiiuae/falcon-mamba-7b-instruct"
    api_key_env = "VLLM_API_KEY"   # the environment variable that holds the key (never the key itself)

    [[remote.transformer]]         # endpoints that answer as the Transformer family
    url = "http://10.0.0.8:8000/v1"
    model = "ibm-granite/granite-4.0-350m"

Environment variables: ``MAMBA_ROUTER_CONFIG`` (the file), ``ENABLE_MAMBA`` (``model_routing.enable_mamba``),
``MAMBA_ROUTER_BACKEND`` (``mamba.backend``), and any key as ``MAMBA_ROUTER__SECTION__KEY``, e.g.
``MAMBA_ROUTER__LOG__LOG_TEXT=true`` or ``MAMBA_ROUTER__MODEL_ROUTING__LEGAL_KEYWORDS=judgment,decree``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from mamba_router.backends.selection import BACKEND_ENV, ENABLE_MAMBA_ENV, normalize_backend_name, switch_value
from mamba_router.errors import ConfigurationError
from mamba_router.generation.requests import MAX_NEW_TOKENS_LIMIT
from mamba_router.paths import user_path
from mamba_router.settings.files import read_settings_file
from mamba_router.settings.loader import LoadedSettings, load_settings, sections_of

CONFIG_ENV = "MAMBA_ROUTER_CONFIG"
RuleName = Literal["long_context", "multi_page", "legal_keywords"]
ALL_RULES: tuple[RuleName, ...] = ("long_context", "multi_page", "legal_keywords")
DEFAULT_LEGAL_KEYWORDS: tuple[str, ...] = (
    "judgment",
    "judgement",
    "order",
    "case",
    "appeal",
    "petition",
    "plaint",
    "decree",
    "writ",
    "bench",
    "section",
)
ENV_ALIASES = {ENABLE_MAMBA_ENV: "model_routing.enable_mamba", BACKEND_ENV: "mamba.backend"}


def default_log_path() -> Path:
    """Where the routing log lives unless configured: the user's state directory."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "mamba-router" / "routing.jsonl"


def split_comma_list(value: Any) -> Any:
    """A comma-separated string (from an environment variable or a terse file) becomes a list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _backend_name(value: Any) -> Any:
    return normalize_backend_name(value) if isinstance(value, str) else value


def _model_reference(value: str) -> str:
    if not value.strip():
        raise ValueError("a model must be a hub id or a directory, not blank")
    return value.strip()


BackendName = Annotated[str | None, BeforeValidator(_backend_name)]  # "Real_Mamba" -> "real-mamba"; "auto" -> None
ModelReference = Annotated[str, AfterValidator(_model_reference)]  # a hub id or a directory, never blank


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    @field_validator("*", mode="before")
    @classmethod
    def _switches(cls, value: Any, info: Any) -> Any:
        # every boolean switch, from a file or the environment, is read by the one parser (ENABLE_MAMBA's too)
        if isinstance(value, str) and cls.model_fields[info.field_name].annotation is bool:
            parsed = switch_value(value)
            return value if parsed is None else parsed
        return value


class RoutingSection(_Section):
    """``[model_routing]``: the rules and what happens when the Transformer cannot take a context."""

    enable_mamba: bool = True
    long_context_tokens: int = Field(default=4096, ge=1, le=100_000_000)
    min_pages: int = Field(default=3, ge=1, le=1_000_000)
    legal_keywords: tuple[str, ...] = DEFAULT_LEGAL_KEYWORDS
    rules: tuple[RuleName, ...] = ALL_RULES
    token_counting: Literal["auto", "tokenizer", "estimate"] = "auto"
    truncation: Literal["off", "keep_start", "keep_end"] = "off"

    @field_validator("legal_keywords", mode="before")
    @classmethod
    def _keywords(cls, value: Any) -> Any:
        value = split_comma_list(value)
        if isinstance(value, (list, tuple)):
            for word in value:
                if not isinstance(word, str) or not word.strip() or word != word.strip():
                    raise ValueError(
                        f"each keyword must be a non-blank string without surrounding spaces, got {word!r}"
                    )
                if not any(ch.isalnum() for ch in word):
                    raise ValueError(f"keyword {word!r} has no letter or digit, so it can never match a word")
        return value

    @field_validator("rules", mode="before")
    @classmethod
    def _rules(cls, value: Any) -> Any:
        return split_comma_list(value)


class MambaSection(_Section):
    """``[mamba]``: which Mamba backend and models, and whether the Transformer may stand in."""

    backend: BackendName = None
    prefer_real: bool = True
    # An instruct hybrid and, on the Transformer side, its dense twin of the same family and tokenizer, so that a
    # routed answer differs by architecture, not by training.
    real_model: ModelReference = "ibm-granite/granite-4.0-h-350m"
    mamba2_model: ModelReference = "ibm-granite/granite-4.0-h-350m"
    fallback: bool = True
    state_cache_bytes: int = Field(default=1 << 30, ge=0)

    @field_validator("fallback", mode="before")
    @classmethod
    def _fallback(cls, value: Any) -> Any:
        # The seed wrote the fallback as a model family: "transformer" (on) or "none" (off).
        if isinstance(value, str) and value.strip().lower() in ("transformer", "none", "error"):
            return value.strip().lower() == "transformer"
        return value


class TransformerSection(_Section):
    """``[transformer]``: the fallback model."""

    model: ModelReference = "ibm-granite/granite-4.0-350m"


class GenerationSection(_Section):
    """``[generation]``: defaults for ``Router.generate``."""

    max_new_tokens: int = Field(default=256, ge=1, le=MAX_NEW_TOKENS_LIMIT)  # the most a request may ask for
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    prompt_format: Literal["auto", "chat", "plain"] = "auto"  # auto: the chat template when the tokenizer has one
    system_prompt: str | None = Field(default=None, max_length=100_000)


class LogSection(_Section):
    """``[log]``: the JSONL routing log."""

    enabled: bool = True
    path: Path = Field(default_factory=default_log_path)
    log_text: bool = False
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=4096)
    backups: int = Field(default=3, ge=0, le=1000)
    required: bool = False  # false: a record that cannot be written is warned about and noted on the result

    @field_validator("path", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():  # Path("") would be the current directory
            raise ValueError("the log path must not be blank; give a file path, or set log.enabled = false")
        return value

    @field_validator("path")
    @classmethod
    def _expanded(cls, value: Path) -> Path:
        if value.name in ("", ".", ".."):
            raise ValueError(f"the log path {str(value)!r} names a directory; give a file path")
        return user_path(value, "log.path")


class LimitsSection(_Section):
    """``[limits]``: the largest request accepted where input enters (the Router, HTTP apps)."""

    max_query_chars: int = Field(default=100_000, ge=1, le=1_000_000_000)
    max_context_chars: int = Field(default=20_000_000, ge=0, le=10_000_000_000)
    max_pages: int = Field(default=1_000_000, ge=0, le=1_000_000)  # 1,000,000: the most a page count is read as
    max_batch: int = Field(default=10_000, ge=1, le=1_000_000)
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, le=1 << 40)


class ServeSection(_Section):
    """``[serve]``: the batching engine each loaded model gets (used by the Router, sync and async) and the HTTP
    server of ``mamba-router serve``."""

    batching: bool = True  # false: the Router runs one request at a time per model, without an engine
    max_batch: int = Field(default=64, ge=1, le=4096)  # sequences one model decodes at once
    max_queue: int = Field(default=256, ge=1, le=1_000_000)  # requests waiting per model before 429
    # prompt tokens read per pass while others decode; unset: the model's own (16,384 on real-mamba, 4,096 else)
    prefill_budget: int | None = Field(default=None, ge=1, le=1 << 30)
    request_timeout_s: float = Field(default=600.0, gt=0, le=86_400)
    host: str = Field(default="127.0.0.1", min_length=1, max_length=255)
    port: int = Field(default=8000, ge=0, le=65535)
    shutdown_grace_s: float = Field(default=30.0, ge=0, le=3600)  # running requests get this long to finish
    # the models run in a process of their own and the server's process keeps HTTP: their threads never wait for
    # each other's turn with Python's GIL (many streams at once; on the H100 1.2-1.3x the throughput of one
    # process at 16 and 64 streams); false: one process
    model_process: bool = True
    # how long a Python thread may hold the GIL while another waits for it (sys.setswitchinterval), in the server's
    # process and its model process (not in an app that imports the library): Python's 5 ms lets a request's
    # routing and tokenizing hold up the engine's thread for that long between two steps. CPU A/B runs (tiny model,
    # 16 streams, 2 cores) are noisy but favour 0.5: benchmarks/results/2026-12-06b-cpu-switch-interval.md
    switch_interval_ms: float = Field(default=0.5, ge=0.05, le=100.0)


class LoraSection(_Section):
    """``[lora]``: everything a LoRA run needs; the file format is in :mod:`mamba_router.lora.config`."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, populate_by_name=True)

    base_model: ModelReference | None = None
    backend: BackendName = None
    target_modules: tuple[str, ...] | None = None
    data: Path | None = Field(default=None, validation_alias=AliasChoices("data", "dataset", "data_path", "train_file"))
    output_dir: Path = Path("lora-adapter")
    r: int = Field(default=8, ge=1, le=1024, validation_alias=AliasChoices("r", "lora_r", "rank"))
    alpha: float = Field(default=16.0, gt=0, validation_alias=AliasChoices("alpha", "lora_alpha"))
    dropout: float = Field(default=0.0, ge=0, lt=1, validation_alias=AliasChoices("dropout", "lora_dropout"))
    learning_rate: float = Field(default=2e-4, gt=0, le=1, validation_alias=AliasChoices("learning_rate", "lr"))
    epochs: int = Field(
        default=1, ge=1, le=10_000, validation_alias=AliasChoices("epochs", "num_epochs", "num_train_epochs")
    )
    max_steps: int | None = Field(default=None, ge=1)
    batch_size: int = Field(
        default=4,
        ge=1,
        le=4096,
        validation_alias=AliasChoices("batch_size", "micro_batch_size", "per_device_train_batch_size"),
    )
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=4096)
    max_length: int = Field(
        default=1024, ge=8, validation_alias=AliasChoices("max_length", "max_seq_length", "cutoff_len")
    )
    eval_fraction: float = Field(default=0.1, ge=0, lt=1)
    eval_every: int = Field(default=50, ge=1)
    save_every: int = Field(default=100, ge=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    on_bad_line: Literal["skip", "error"] = "skip"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"

    @field_validator("target_modules", mode="before")
    @classmethod
    def _targets(cls, value: Any) -> Any:
        value = split_comma_list(value)
        if value is not None and not value:
            raise ValueError("give at least one module name, or leave target_modules out to take them from the model")
        return value


def _endpoint_url(value: str) -> str:
    url = value.strip().rstrip("/")
    scheme, _, rest = url.partition("://")
    if scheme not in ("http", "https") or not rest or any(c.isspace() for c in rest):
        raise ValueError(f"an endpoint url must be http(s)://host[:port]/path, got {value!r}")
    return url


def _environment_name(value: str) -> str:
    if not value or not all(c.isalnum() or c == "_" for c in value) or value[0].isdigit():
        raise ValueError(f"api_key_env names an environment variable (letters, digits, _), got {value!r}")
    return value


class RemoteEndpoint(_Section):
    """One OpenAI-compatible server and the model name it serves (``[[remote.mamba]]``, ``[[remote.transformer]]``)."""

    url: Annotated[str, AfterValidator(_endpoint_url)]  # the API base, e.g. http://host:8000/v1
    model: ModelReference  # the name the server knows the model by (and a local tokenizer's, where present)
    api_key_env: Annotated[str, AfterValidator(_environment_name)] | None = None
    name: str | None = Field(default=None, min_length=1, max_length=100)  # a label for logs; default: the url

    @property
    def label(self) -> str:
        """How logs and ``mamba-router info`` name this endpoint (never with its key)."""
        return self.name or self.url


class RemoteSection(_Section):
    """``[remote]``: OpenAI-compatible servers that answer as the Mamba or the Transformer family."""

    mamba: tuple[RemoteEndpoint, ...] = ()
    transformer: tuple[RemoteEndpoint, ...] = ()
    connect_timeout_s: float = Field(default=5.0, gt=0, le=600)
    read_timeout_s: float = Field(default=120.0, gt=0, le=86_400)
    retries: int = Field(default=2, ge=0, le=20)
    backoff_s: float = Field(default=0.25, ge=0, le=60)
    cooldown_s: float = Field(default=30.0, ge=0, le=3600)

    def endpoints_of(self, family: str) -> tuple[RemoteEndpoint, ...]:
        """The endpoints that answer as ``family`` (``mamba`` or ``transformer``)."""
        return self.mamba if family == "mamba" else self.transformer


class RaySection(_Section):
    """``[ray]``: ``mamba-router serve --ray`` (and ``build_ray_app``): replicas of each family as Ray Serve
    deployments behind one ingress with the HTTP API of ``mamba-router serve``."""

    address: str | None = None  # a running cluster ("auto", "ray://head:10001"); unset: start one on this machine
    ingress_replicas: int = Field(default=1, ge=1, le=1000)
    mamba_replicas: int = Field(default=1, ge=1, le=1000)
    transformer_replicas: int = Field(default=1, ge=1, le=1000)
    mamba_num_gpus: float = Field(default=0.0, ge=0, le=64)  # GPUs per Mamba replica (1 on a GPU host)
    transformer_num_gpus: float = Field(default=0.0, ge=0, le=64)
    mamba_num_cpus: float = Field(default=1.0, ge=0, le=1024)
    transformer_num_cpus: float = Field(default=1.0, ge=0, le=1024)
    # Ray Serve autoscaling_config passed through as it is (min_replicas, max_replicas, target_ongoing_requests, ...);
    # when set, it replaces the family's fixed replica count
    mamba_autoscaling: dict[str, Any] | None = None
    transformer_autoscaling: dict[str, Any] | None = None
    max_ongoing_requests: int = Field(default=64, ge=1, le=100_000)  # per replica
    affinity_max_queue: int = Field(default=16, ge=1, le=100_000)  # a document's owner this busy gives way
    retries: int = Field(default=2, ge=0, le=20)  # on another replica when one dies mid-request


class RouterConfig(_Section):
    """Every section of the configuration. See the module docstring for the file format."""

    model_routing: RoutingSection = RoutingSection()
    mamba: MambaSection = MambaSection()
    transformer: TransformerSection = TransformerSection()
    generation: GenerationSection = GenerationSection()
    log: LogSection = LogSection()
    limits: LimitsSection = LimitsSection()
    serve: ServeSection = ServeSection()
    lora: LoraSection = LoraSection()
    remote: RemoteSection = RemoteSection()
    ray: RaySection = RaySection()


SECTIONS: dict[str, type[BaseModel]] = sections_of(RouterConfig)
LoadedConfig = LoadedSettings[RouterConfig]


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LoadedConfig:
    """Read the config file (``path``, else ``$MAMBA_ROUTER_CONFIG``, else none), the environment and ``overrides``.

    ``overrides`` maps dotted keys (``"log.path"``) to values and wins over everything. Raises
    :class:`ConfigurationError` naming the bad key, its source and the allowed values.
    """
    env = os.environ if environ is None else environ
    file = user_path(path, "config file") if path is not None else _path_from_env(env)
    data = None
    if file is not None:
        if file.is_dir():
            raise ConfigurationError(
                f"config file {file} (from {CONFIG_ENV} or the path given) is a directory; give the path of the "
                "TOML or YAML file itself"
            )
        if not file.is_file():
            raise ConfigurationError(f"config file {file} does not exist (from {CONFIG_ENV} or the path given)")
        data = read_settings_file(file, "config file")
    return load_settings(
        RouterConfig,
        file_data=data,
        file=file,
        environ=env,
        env_aliases=ENV_ALIASES,
        overrides=overrides,
        what="configuration",
    )


def _path_from_env(env: Mapping[str, str]) -> Path | None:
    value = env.get(CONFIG_ENV, "").strip()
    return user_path(value, CONFIG_ENV) if value else None
