"""The pruning methods: one entry each, the twin of the family registry (optin.arch.registry).

An entry says how a method's units are scored (``scorer``: "module:function", imported only by the
jobs that score with it), what the scorer needs (labels, gradients, the dense model's taps and
logits), which families and unit kinds it applies to, its native resolution, how its scores meet
the common search, how much compute its scoring costs, its settings and their defaults, its named
variants (``optin_tau``, ``kwon_tuned``, ``flap_full``...) and its plot style.

The workflow's rules, the solve script, tables, plots, config checks and ``optin.prune`` read this
table; a method name written anywhere else is a test failure (tests/test_method_registry.py).
Light on purpose (no torch): the Snakefile reads it at parse time.

A one-pass scorer is called as ``scorer(adapter, calibration, settings, seed)`` with
``calibration`` an ``optin.methods.Calibration`` and returns one row per unit (layer, kind, index,
importance, ...). OPTIN (``sharded``) is scored per layer by the engine (optin.engine.scoring).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from optin.engine.settings import OptinMethod, check_budget_metric

# What a method entry's scores are, for the common search: "shared" scores are on one scale
# across unit kinds and layers (a loss or feature drift), "per_kind" scores are not (a weight norm,
# a uniform draw, a per-layer statistic) and are made comparable by the search's cost model
# (optin.engine.search.cost_weighted; decoder LLMs also divide by the layer's mean).
SCORE_SCALES = ("shared", "per_kind")
# The compute a method's scoring spends, for the cost tables (optin.workflow.tables.scoring_passes,
# optin.engine.flops.llm_scoring_macs): none, one forward, a forward and a backward per
# calibration sample, or one masked forward per unit (from the unit's layer on).
SCORING_PASSES = ("none", "forward", "forward_backward", "per_unit")
# Settings every method takes, that change only the search.
SEARCH_SETTINGS = {"budget_metric": "macs"}


@dataclass(frozen=True)
class Variant:
    """A named preset of a method's settings (a config.yaml ``methods`` entry of that kind)."""

    settings: dict
    style: tuple[str, str]               # (colour, marker) in every figure
    summary: str = ""


@dataclass(frozen=True)
class Method:
    name: str                            # the config's methods.<m>.kind
    summary: str
    scorer: str                          # "module:function"
    style: tuple[str, str]               # (colour, marker) in every figure
    native_resolution: str               # what it scores and selects by design
    score_scale: str = "shared"
    scoring_passes: str = "forward"
    families: tuple[str, ...] | None = None   # None: every family
    unit_kinds: tuple[str, ...] = ("head", "neuron", "token", "channel")
    needs_calibration: bool = True       # reads calibration inputs at all
    needs_teacher: bool = False          # the dense model's taps and logits on the calibration batch
    needs_labels: bool = False           # task labels of the calibration samples
    needs_gradients: bool = False        # backward passes through the model
    # Which checkpoint loader its workflow job uses: the family's light scoring loader (weights and
    # the adapter's own forward) or the model's own class ("model": gradients of the real weights).
    loader: str = "scoring"
    sharded: bool = False                # scored per layer by the engine (score_shard, merge_scores)
    # Its own settings with their defaults (OPTIN's are optin.engine.settings.OptinMethod's fields).
    settings: Mapping = field(default_factory=dict)
    # Settings that act on one searched mask after the search (rule tune_mask, ``mask_stages``); a
    # method with any of them true has a tuned mask.
    stage_settings: tuple[str, ...] = ()
    # Settings that change only how the search uses the scores: entries differing only there share
    # one scoring run (FLAP's structure and bias compensation).
    search_only: tuple[str, ...] = ()
    seeded: bool = True                  # its scores depend on the seed (a calibration draw, a random draw)
    cost_reference: bool = False         # the method whose scoring cost the LLM report states the others against
    mask_stages: str | None = None       # "module:function" running those stages
    # (forward, backward) passes those stages add: (stage settings, calibration size, masks tuned) -> passes
    stage_passes: Callable[[dict, int, int], tuple[int, int]] | None = field(default=None, compare=False)
    variants: Mapping[str, Variant] = field(default_factory=dict)
    check: Callable[[dict], None] | None = field(default=None, compare=False)   # extra checks of its settings

    def function(self, spec: str | None = None) -> Callable:
        module, _, name = (spec or self.scorer).partition(":")
        return getattr(importlib.import_module(module), name)

    def applies_to(self, family) -> bool:
        """Whether it scores units of ``family`` (an optin.arch.registry.Family)."""
        if self.families is not None and family.name not in self.families:
            return False
        return bool(set(self.unit_kinds) & set(family.unit_kinds))

    def fit_error(self, family) -> str | None:
        if self.applies_to(family):
            return None
        where = f"families {list(self.families)}" if self.families is not None else f"unit kinds {list(self.unit_kinds)}"
        return f"method kind {self.name!r} applies to {where}, not to a {family.name} model"


@dataclass
class Calibration:
    """What a one-pass scorer reads: the calibration batch (model inputs), the labels of its
    samples where the task has them, and the model's latency table where a setting asks for it."""

    batch: dict
    labels: object = None
    latency_table: object = None
    second_batch: dict | None = None     # OPTIN's neurons with same_batch: false (the authors' code)


def check_fisher_batch_size(value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"fisher_batch_size must be a positive integer (1 = per sample, 32 = Kwon et al.'s code), got {value!r}")


def _check_gradient_settings(settings: dict) -> None:
    check_fisher_batch_size(settings["fisher_batch_size"])
    eta = settings.get("latency_eta", 0.0)
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or eta < 0:
        raise ValueError(f"latency_eta must be a number >= 0 (NViT's default 5e-4; 0 = no latency term), got {eta!r}")


def _check_flap(settings: dict) -> None:
    if settings["structure"] not in ("global", "adaptive"):
        raise ValueError(f"structure must be 'global' (the common search) or 'adaptive' (FLAP's AL-AM), got {settings['structure']!r}")
    if not isinstance(settings["bias_compensation"], bool):
        raise ValueError(f"bias_compensation must be true or false, got {settings['bias_compensation']!r}")


def _kwon_stage_passes(stages: dict, calibration_size: int, masks_tuned: int) -> tuple[int, int]:
    """Rearranging a mask recomputes the Fisher blocks (a forward and a backward per sample); the
    least-squares tuning runs teacher and pruned model side by side, layer by layer (two forwards)."""
    again = calibration_size * masks_tuned if stages.get("rearrange") else 0
    return again + (2 * masks_tuned if stages.get("tune") else 0), again


OKABE_ITO_BLUE = "#0072B2"
LLM_ONLY = ("llama",)
# Encoder classifiers with head and neuron masks, where the task loss has labels.
LABELLED_CLASSIFIERS = ("bert", "vit")

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("optin", "OPTIN: the drift of the downstream trajectory (MD) and of the logits (KL) when a unit alone is masked",
           scorer="optin.methods.optin:score", style=(OKABE_ITO_BLUE, "o"), native_resolution="single units",
           scoring_passes="per_unit", needs_teacher=True, sharded=True,
           variants={
               "optin_tau": Variant({"semantics": "paper", "prune_tokens": True}, ("#17BECF", "^"),
                                    "OPTIN-tau: heads, neurons and tokens (vision)"),
               "tome": Variant({"semantics": "paper", "prune_tokens": True, "tau_head_neuron_share": [0.0, 0.0],
                                "token_schedule": "uniform"}, ("#BCBD22", "v"),
                               "ToMe alone at equal MACs: r tokens merged per layer, every head and neuron kept"),
               "optin_reference": Variant({"semantics": "reference"}, (OKABE_ITO_BLUE, "p"),
                                          "every default of the authors' released code"),
               "optin_md_mean": Variant({"semantics": "paper", "md_reduction": "mean"}, ("#009E73", "s"),
                                        "MD as the mean over each tap's Gram entries (CNN stages of different sizes)"),
           }),
    Method("kwon", "Kwon et al. 2022: the empirical Fisher of each head/neuron mask under the task loss",
           scorer="optin.methods.kwon:score", style=("#D55E00", "s"), native_resolution="single heads and neurons",
           scoring_passes="forward_backward", families=LABELLED_CLASSIFIERS, unit_kinds=("head", "neuron"),
           needs_labels=True, needs_gradients=True,
           settings={"fisher_batch_size": 1, "rearrange": False, "tune": False}, stage_settings=("rearrange", "tune"),
           mask_stages="optin.methods.kwon:mask_stages", stage_passes=_kwon_stage_passes, check=_check_gradient_settings,
           variants={"kwon_tuned": Variant({"rearrange": True, "tune": True}, ("#D55E00", "h"),
                                           "+ their mask rearrangement and least-squares mask tuning")}),
    Method("nvit", "NViT: Hessian-aware saliency, per mini-batch (sum of w * dL/dw over a unit's weights / c)^2",
           scorer="optin.methods.nvit:score", style=("#8C564B", "D"), native_resolution="single heads and neurons",
           scoring_passes="forward_backward", families=LABELLED_CLASSIFIERS, unit_kinds=("head", "neuron"),
           needs_labels=True, needs_gradients=True, loader="model",
           settings={"fisher_batch_size": 32, "latency_eta": 0.0}, check=_check_gradient_settings),
    Method("magnitude", "L1 weight norm of each unit, relative to its layer's mean (Li et al. 2017 for channels)",
           scorer="optin.methods.baselines:magnitude", style=("#56B4E9", "X"), native_resolution="single units",
           score_scale="per_kind", scoring_passes="none", needs_calibration=False, seeded=False),
    Method("random", "seeded uniform scores", scorer="optin.methods.baselines:uniform", style=("#000000", "x"),
           native_resolution="single units", score_scale="per_kind", scoring_passes="none", needs_calibration=False),
    Method("flap", "FLAP (An et al. 2024, WIFV): each input channel's fluctuation over the calibration tokens times its squared weight column norm",
           scorer="optin.methods.llm_peers:flap", style=("#E69F00", "s"), native_resolution="single MLP channels",
           score_scale="per_kind", families=LLM_ONLY, unit_kinds=("head", "neuron"),
           settings={"structure": "global", "bias_compensation": False}, search_only=("structure", "bias_compensation"),
           cost_reference=True,
           check=_check_flap,
           variants={
               "flap_structure": Variant({"structure": "adaptive"}, ("#E69F00", "D"), "FLAP's own AL-AM structure"),
               "flap_full": Variant({"structure": "adaptive", "bias_compensation": True}, ("#E69F00", "*"),
                                    "FLAP as released: AL-AM and bias compensation"),
           }),
    Method("wanda_sp", "Wanda-sp (FLAP's baseline): mean over output rows of |W_ij| times input channel j's activation norm",
           scorer="optin.methods.llm_peers:wanda_sp", style=("#009E73", "^"), native_resolution="single MLP channels",
           score_scale="per_kind", families=LLM_ONLY, unit_kinds=("head", "neuron")),
    Method("llm_pruner", "LLM-Pruner (Ma et al. 2023, one-shot, param_first): sum of |W * dL/dW| over each group's weights",
           scorer="optin.methods.llm_peers:llm_pruner", style=("#D55E00", "v"), native_resolution="single MLP channels",
           scoring_passes="forward_backward", families=LLM_ONLY, unit_kinds=("head", "neuron"), needs_gradients=True),
    Method("minitron", "Minitron (Muralidharan et al. 2024): activation norm per head and channel, sequence mean, batch L2",
           scorer="optin.methods.llm_peers:minitron", style=("#CC79A7", "P"), native_resolution="single MLP channels",
           score_scale="per_kind", families=LLM_ONLY, unit_kinds=("head", "neuron")),
)}
SHARDED = next(m.name for m in METHODS.values() if m.sharded)   # the engine's method (score_shard, merge_scores)
DEFAULT = SHARDED    # the method of a config entry without a kind, and of optin.prune


def method(name: str) -> Method:
    """The entry of a method kind, or of a named variant's kind."""
    if name in METHODS:
        return METHODS[name]
    for entry in METHODS.values():
        if name in entry.variants:
            return entry
    raise ValueError(f"unknown method {name!r}; known kinds: {sorted(METHODS)}; variants: {sorted(variant_names())}")


def variant_names() -> dict[str, str]:
    """Every named variant -> its method kind."""
    return {v: m.name for m in METHODS.values() for v in m.variants}


def names() -> list[str]:
    """Every method name the registry defines: kinds and variants."""
    return sorted(set(METHODS) | set(variant_names()))


def kind_of(entry: Mapping) -> str:
    """The kind of a config ``methods`` entry (``kind`` defaults to OPTIN)."""
    kind = entry.get("kind", DEFAULT)
    if kind not in METHODS:
        raise ValueError(f"method key 'kind' must be one of {sorted(METHODS)}, got {kind!r}")
    return kind


def entry_of(config_entry: Mapping) -> Method:
    return METHODS[kind_of(config_entry)]


def as_entry(spec) -> dict:
    """A method as the user names it -> a config ``methods`` entry: a kind or variant name
    (``"kwon"``, ``"optin_tau"``), or a mapping (``{"kind": "kwon", "fisher_batch_size": 32}``)."""
    if isinstance(spec, str):
        entry = method(spec)
        return {"kind": entry.name, **(entry.variants[spec].settings if spec in entry.variants else {})}
    if isinstance(spec, Mapping):
        return dict(spec)
    raise ValueError(f"method must be a method name ({names()}) or a mapping of settings with 'kind', got {spec!r}")


def resolved_settings(config_entry: Mapping) -> dict:
    """Every resolved setting of a config ``methods`` entry: what a rule passes as params, so a
    changed default reruns it. Unknown or malformed settings are an error naming the key."""
    entry = entry_of(config_entry)
    if entry.sharded:
        return OptinMethod.from_config(dict(config_entry)).settings()
    defaults = {**entry.settings, **SEARCH_SETTINGS}
    extra = sorted(set(config_entry) - {"kind"} - set(defaults))
    if extra:
        raise ValueError(f"a {entry.name} method takes no settings {extra}; it takes {sorted(defaults)}")
    settings = {k: config_entry.get(k, v) for k, v in defaults.items()}
    for key in entry.stage_settings:
        if not isinstance(settings[key], bool):
            raise ValueError(f"{key} must be true or false, got {settings[key]!r}")
    check_budget_metric(settings["budget_metric"])
    if entry.check is not None:
        entry.check(settings)
    return {"kind": entry.name, **settings}


def scoring_settings(config_entry: Mapping) -> dict:
    """What a method's scores depend on: entries equal here share one scoring run (OPTIN-beta and
    OPTIN-tau differ only in the search; Kwon et al.'s stages act after it)."""
    entry = entry_of(config_entry)
    if entry.sharded:
        return OptinMethod.from_config(dict(config_entry)).scoring_settings()
    settings = resolved_settings(config_entry)
    return {k: v for k, v in settings.items()
            if k not in entry.stage_settings and k not in entry.search_only and k not in SEARCH_SETTINGS}


def has_mask_stages(config_entry: Mapping) -> bool:
    """Whether searched masks of this entry go through its method's per-mask stages (tune_mask)."""
    entry = entry_of(config_entry)
    return any(config_entry.get(key, False) for key in entry.stage_settings)


def cost_reference() -> str:
    return next(m.name for m in METHODS.values() if m.cost_reference)


def style(name: str) -> tuple[str, str] | None:
    """(colour, marker) of a method kind or variant name; None for a name the registry does not define."""
    if name in METHODS:
        return METHODS[name].style
    kind = variant_names().get(name)
    return METHODS[kind].variants[name].style if kind else None
