"""The scoring engine's settings, OPTIN's method settings: the paper's text and the authors' released
code ("reference").

optin-method.md §4 lists where the code departs from the paper; each departure is a field here so
that an ablation can switch one alone. ``OptinMethod.from_config`` starts from the semantics' defaults
and applies overrides; unknown keys are an error naming the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class OptinMethod:
    semantics: str = "paper"              # the paper's formulas, or "reference": every default of the authors' code (SEMANTICS)
    lambda_c: float = 0.1                 # fixed KL weight (paper)
    md_weight: float = 1.0                # ablation: 0 scores by the KL term alone
    # Ablation: MD over every downstream tap (the paper, "all"), the next one only ("next"), or the
    # next k (an integer >= 1; 1 is "next").
    trajectory_horizon: str | int = "all"
    temperature: float = 4.0              # of the KL term's softmax
    md_rows: int = 768                    # K token rows per Gram matrix
    # ||G_t - G_s||^2 summed over the K x K entries (the paper), or their mean: CNN taps have
    # different row counts per stage (spatial positions), and a sum weighs a tap by K^2.
    md_reduction: str = "sum"
    # Ablation (BERT): the trajectory point of a layer, the FFN output as in the authors' code
    # ("default") or the layer's output hidden state ("layer_output").
    tap: str = "default"
    md_fresh_subsets: bool = False        # §4.8: a new random row subset per unit and tap
    md_include_padding: bool = False      # §4.9: the code's Gram rows include padding positions
    # Last-layer units also compare their own tap. Algorithm 1 sums k = i+1..N over F_0..F_N with F_N
    # the final output, which last-layer units change; the authors' code does the same (§3). Without
    # it those units are scored by lambda_c * KL alone (~1e-8 against MD ~1-900 on MiniLM) and the
    # search deletes the whole last layer first (measured: accuracy 0.78 -> 0.61 at 0.8 MACs).
    include_final_layer_tap: bool = True
    # The authors' code keeps this switch per unit kind (head_/neuron_include_fin_layer_mmd);
    # None follows include_final_layer_tap (which also governs tokens and channels).
    head_include_final_layer_tap: bool | None = None
    neuron_include_final_layer_tap: bool | None = None   # the same for neurons
    kl_divide_logits: bool = True         # §4.3: softmax(z / T) (paper) or softmax(z) (code)
    kl_reduction: str = "batchmean"       # §4.3: "sum" over the batch in the code
    kl_float64: bool = True               # §4.3: the code computes in float32
    kl_clamp: bool = False                # §4.3: the code clamps KL >= 0
    dynamic_lambda: bool = False          # §4.2: per-unit power-of-ten KL scaling
    lambda_contribution: float = 10.0     # §4.2: dynamic_lambda scales KL to ~MD / this
    positional_weighting: bool = False    # §4.4
    head_metric_decay: float = 1.0        # §4.5
    neuron_metric_decay: float = 1.0      # §4.5, for neurons
    fin_decay: float = 1.0                # §4.5: extra weight of last-layer units
    # Per kind as in the authors' code (head_/neuron_fin_decay_val); None follows fin_decay.
    head_fin_decay: float | None = None
    neuron_fin_decay: float | None = None     # the same for neurons
    cumulative_head_mask: bool = False    # §4.6 (opt-in even in reference mode)
    same_batch: bool = True               # §4.7: heads and neurons on one calibration batch
    # OPTIN-tau (§5, vision): tokens take the part of the MAC reduction that heads and neurons do
    # not; heads + neurons take a fraction drawn (seeded) from this range, the authors' U(0.15, 0.30).
    prune_tokens: bool = False
    tau_head_neuron_share: tuple[float, float] = (0.15, 0.30)
    # Tokens leave by OPTIN-tau's token scores ("importance") or r per layer as in ToMe ("uniform";
    # with a share of 0 this is ToMe alone at equal MACs, the token baseline).
    token_schedule: str = "importance"
    # CNN channels: rank by importance per MAC (default) or by importance alone (optin.engine.search.search_channels).
    channel_ranking: str = "per_mac"
    # What ``budget`` is a fraction of: the dense MACs, or the dense latency predicted by the model's
    # latency lookup table (optin.engine.latency, optin.engine.search.search_latency).
    budget_metric: str = "macs"

    # Fields that only change the mask search: methods that differ only here share one scoring run.
    SOLVER_FIELDS = ("prune_tokens", "tau_head_neuron_share", "token_schedule", "channel_ranking", "budget_metric")
    # Fields that only change how merge_scores combines per-unit (md, kl): methods that differ only
    # here (and in the search) share the per-layer score shards, so lambda sweeps cost no forward.
    COMBINE_FIELDS = ("semantics", "lambda_c", "md_weight", "dynamic_lambda", "lambda_contribution",
                      "positional_weighting", "head_metric_decay", "neuron_metric_decay", "fin_decay",
                      "head_fin_decay", "neuron_fin_decay")

    def settings(self) -> dict:
        """Every resolved field: what a rule passes as params, so a changed default reruns it."""
        return dataclasses.asdict(self)

    def solver_settings(self) -> dict:
        return {k: v for k, v in self.settings().items() if k in self.SOLVER_FIELDS}

    def scoring_settings(self) -> dict:
        return {k: v for k, v in self.settings().items() if k not in self.SOLVER_FIELDS}

    def shard_settings(self) -> dict:
        """What the per-layer (md, kl) computation reads."""
        return {k: v for k, v in self.scoring_settings().items() if k not in self.COMBINE_FIELDS}

    @classmethod
    def from_config(cls, config: dict) -> OptinMethod:
        config = dict(config)
        config.pop("kind", None)   # the registry dispatched on it (optin.methods.registry)
        semantics = config.pop("semantics", "paper")
        if semantics not in SEMANTICS:
            raise ValueError(f"method key 'semantics' must be one of {sorted(SEMANTICS)}, got {semantics!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - fields)
        if unknown:
            raise ValueError(f"unknown OPTIN method setting(s) {unknown}; known: {sorted(fields)}")
        if config.get("channel_ranking", "per_mac") not in ("per_mac", "importance"):
            raise ValueError(f"channel_ranking must be 'per_mac' or 'importance', got {config['channel_ranking']!r}")
        check_budget_metric(config.get("budget_metric", "macs"))
        if config.get("tap", "default") not in ("default", "layer_output"):
            raise ValueError(f"tap must be 'default' or 'layer_output', got {config['tap']!r}")
        if config.get("token_schedule", "importance") not in ("importance", "uniform"):
            raise ValueError(f"token_schedule must be 'importance' or 'uniform', got {config['token_schedule']!r}")
        horizon = config.get("trajectory_horizon", "all")
        if horizon not in ("all", "next") and not (type(horizon) is int and horizon >= 1):
            raise ValueError(f"trajectory_horizon must be 'all', 'next' or an integer >= 1 (taps after the unit's layer), "
                             f"got {horizon!r}")
        if config.get("md_reduction", "sum") not in ("sum", "mean"):
            raise ValueError(f"md_reduction must be 'sum' or 'mean', got {config['md_reduction']!r}")
        for key in ("head_include_final_layer_tap", "neuron_include_final_layer_tap"):
            if config.get(key) not in (None, True, False):
                raise ValueError(f"{key} must be true, false or null (follow include_final_layer_tap), got {config[key]!r}")
        if "tau_head_neuron_share" in config:
            low, high = config["tau_head_neuron_share"]
            if not 0.0 <= low <= high < 1.0:
                raise ValueError(f"tau_head_neuron_share must be [low, high] with 0 <= low <= high < 1, got {[low, high]}")
            config["tau_head_neuron_share"] = (float(low), float(high))
        method = dataclasses.replace(SEMANTICS[semantics], **config)
        if method.dynamic_lambda and method.lambda_c not in (0.0, OptinMethod.lambda_c):
            raise ValueError(f"lambda_c = {method.lambda_c} has no effect with dynamic_lambda (reference semantics scale KL "
                             "per unit): set lambda_contribution, or lambda_c: 0 for MD only")
        if method.md_weight == 0.0 and method.lambda_c == 0.0:
            raise ValueError("md_weight: 0 with lambda_c: 0 leaves no term to score by")
        return method

    def includes_final_layer_tap(self, kind: str) -> bool:
        own = {"head": self.head_include_final_layer_tap, "neuron": self.neuron_include_final_layer_tap}.get(kind)
        return self.include_final_layer_tap if own is None else own

    def final_layer_decay(self, kind: str) -> float:
        own = {"head": self.head_fin_decay, "neuron": self.neuron_fin_decay}.get(kind)
        return self.fin_decay if own is None else own

    def trajectory(self, kind: str, layer: int, num_layers: int, final_tap: int | None = None, decoder_taps: int = 0) -> list[int]:
        """Tap indices whose drift counts for a unit of ``kind`` in ``layer``. ``final_tap`` is the tap a
        last-layer unit changes (its own, L - 1, by default; the output tap L for ViTs).
        ``decoder_taps`` taps L, L+1, ... follow the encoder (a segmentation decoder): they are the
        final output F_N of Algorithm 1 for every unit, the last layer's included."""
        if decoder_taps:
            taps = list(range(layer + 1, num_layers)) + list(range(num_layers, num_layers + decoder_taps))
        elif layer == num_layers - 1 and self.includes_final_layer_tap(kind):
            taps = [num_layers - 1 if final_tap is None else final_tap]
        else:
            taps = list(range(layer + 1, num_layers))
        return taps if self.trajectory_horizon == "all" else taps[: self.horizon_taps()]

    def horizon_taps(self) -> int | None:
        """How many downstream taps the horizon keeps (None: all)."""
        return {"all": None, "next": 1}.get(self.trajectory_horizon, self.trajectory_horizon)


BUDGET_METRICS = ("macs", "latency")


def check_budget_metric(value) -> str:
    if value not in BUDGET_METRICS:
        raise ValueError(f"budget_metric must be one of {list(BUDGET_METRICS)}, got {value!r}")
    return value


SEMANTICS = {
    "paper": OptinMethod(),
    "reference": OptinMethod(
        semantics="reference",
        md_fresh_subsets=True,
        md_include_padding=True,
        kl_divide_logits=False,
        kl_reduction="sum",
        kl_float64=False,
        kl_clamp=True,
        dynamic_lambda=True,
        positional_weighting=True,
        head_metric_decay=0.5,
        neuron_metric_decay=1.0,
        fin_decay=0.5,
        cumulative_head_mask=False,
        same_batch=False,
    ),
}
