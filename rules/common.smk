import re
from pathlib import Path

from optin.arch.registry import FAMILIES, IMAGE_SOURCES, SEGMENTATION_SOURCES, TEXT_SOURCES, training_of
from optin.workflow.config import CALIBRATION_DRAWS, in_repository, slim_kept, experiment_budgets, budget_label, calibration_n, check, experiment_methods, experiment_seeds, validate_schema
from optin.engine.settings import OptinMethod
from optin.methods.registry import entry_of, has_mask_stages, resolved_settings
from optin.methods.registry import scoring_settings as resolved_scoring_settings
from optin.workflow.sweeps import as_dicts, sweep_runs

validate_schema(config, Path(workflow.basedir) / "schemas" / "config.schema.yaml")
check(config, base_dir=Path(workflow.basedir).parent)

RUN = config["run"]
CALIB = config["calibration"]


wildcard_constraints:
    model=r"[A-Za-z0-9_.-]+",
    dataset=r"[A-Za-z0-9_.-]+",
    method=r"[A-Za-z0-9_.-]+",
    seed=r"\d+",
    n=r"\d+",
    layer=r"\d+",
    budget=r"\d\.\d{3}",


def method_settings(method):
    """Every resolved setting of a configured method (optin.methods.registry.resolved_settings)."""
    return resolved_settings(config["methods"][method])


def scoring_settings(method):
    return resolved_scoring_settings(config["methods"][method])


def method_entry(method):
    """The registry entry of a configured method."""
    return entry_of(config["methods"][method])


def mask_file(w):
    """The searched mask, or for a method with per-mask stages (Kwon et al.'s rearrangement and
    tuning) the mask after those stages."""
    suffix = ".tuned.json" if has_mask_stages(config["methods"][w.method]) else ".json"
    return f"results/masks/{w.model}/{w.dataset}/{w.method}/calib{w.n}-seed{w.seed}/budget{w.budget}{suffix}"


def methods_tuned():
    return name_pattern([name for name, entry in config["methods"].items() if has_mask_stages(entry)])


def shard_settings(method):
    return OptinMethod.from_config(config["methods"][method]).shard_settings()


def shards_method(method):
    """The first configured OPTIN method whose per-layer (md, kl) shards are the same: methods that
    differ only in how (md, kl) combine (lambda_c, md_weight, the reference decays) share them."""
    return first_alike(method, shard_settings, [n for n in config["methods"] if method_entry(n).sharded])


def name_pattern(names):
    """A wildcard constraint matching exactly these names (none: matches nothing)."""
    return "|".join(map(re.escape, names)) if names else "(?!)"


def sharded_methods():
    """Configured methods scored per layer by the engine (score_shard, merge_scores)."""
    return name_pattern([name for name in config["methods"] if method_entry(name).sharded])


def one_pass_methods(needs_calibration):
    """Configured methods scored in one job, with or without the calibration batch (score, score_weights)."""
    return name_pattern([name for name in config["methods"] if not method_entry(name).sharded
                         and method_entry(name).needs_calibration == needs_calibration])


def has_latency_table(model):
    """Encoders of identical layers get a latency lookup table (optin.engine.latency)."""
    return family_of(model).cost_model == "encoder"


def latency_table_file(model, dataset):
    return f"results/latency/{model}/{dataset}/{DEVICE}.json"


def solve_latency_table(w):
    """The latency table a latency-budgeted search reads (none for a MAC budget)."""
    settings = method_settings(w.method)
    return [latency_table_file(w.model, w.dataset)] if settings.get("budget_metric") == "latency" else []


def evaluation_latency_table(w):
    """Every evaluation of a model with a latency table reports its predicted speed-up."""
    return [latency_table_file(w.model, w.dataset)] if has_latency_table(w.model) else []


def scoring_latency_table(w):
    """A scorer's latency-aware term reads the table (NViT's latency_eta > 0)."""
    return [latency_table_file(w.model, w.dataset)] if method_settings(w.method).get("latency_eta") else []


def family_of(model):
    return FAMILIES[config["models"][model]["family"]]


def is_convnet(model):
    return family_of(model).unit_kinds == ("channel",)


def scores_method(method):
    """The first configured method with the same scoring settings: OPTIN-beta and OPTIN-tau differ
    only in the search, so they share one scoring run."""
    return first_alike(method, scoring_settings, list(config["methods"]))


def first_alike(method, settings, candidates):
    """The first of ``candidates`` whose ``settings`` equal ``method``'s: whose outputs it can reuse."""
    target = settings(method)
    return next(name for name in candidates if settings(name) == target)


def datasets_of_kind(kinds):
    return name_pattern([name for name, d in config["datasets"].items() if d["source"]["kind"] in kinds])


def is_image_dataset(dataset):
    return config["datasets"][dataset]["source"]["kind"] in IMAGE_SOURCES


def is_segmentation_dataset(dataset):
    return config["datasets"][dataset]["source"]["kind"] in SEGMENTATION_SOURCES


def experiment_of(model, dataset):
    for exp in config["experiments"].values():
        if exp["model"] == model and exp["dataset"] == dataset:
            return exp
    raise ValueError(f"no experiment pairs model {model!r} with dataset {dataset!r}")


NETWORK_DATASETS = ("glue", "rt_polarity")  # text sources fetched by download_dataset


def prefetch_files():
    """The outputs of every rule of the run that reaches the network (rule prefetch)."""
    models = sorted({m for m, _ in run_pairs()})
    datasets = sorted({d for _, d in run_pairs()} | {prepared_on(m) for m in models if prepared_on(m)})
    files = []
    for model in models:
        kind = config["models"][model]["source"]["kind"]
        if kind == "hub":
            files.append(f"results/hub/{model}")
        elif kind == "url":
            files.append(f"results/downloads/weights/{model}.pt")
    for dataset in datasets:
        source = config["datasets"][dataset]["source"]
        if source["kind"] in NETWORK_DATASETS:
            files.append(f"results/data/{dataset}/sentences.csv")
        elif source["kind"] == "cifar10" and "dir" not in source:
            files.append("results/downloads/cifar10/cifar-10-batches-py")
    return sorted(set(files))


def models_on(dataset):
    """The models that experiments of the run evaluate on ``dataset``."""
    return sorted({m for m, d in run_pairs() if d == dataset})


def run_pairs():
    return [(config["experiments"][e]["model"], config["experiments"][e]["dataset"]) for e in RUN["experiments"]]


DEVICE = config.get("device", "cpu")


def gpus(w):
    return 1 if DEVICE == "cuda" else 0


def memory(mb):
    """Host memory, +50 % on each retry (the cluster profiles retry a failed job once): a job
    sized for a small node is not resubmitted asking for several times its memory."""
    return lambda wildcards, attempt: int(mb * (1 + 0.5 * (attempt - 1)))


def keeps_slim(w):
    """Whether evaluate leaves this slim checkpoint on disk (evaluation.keep_slim)."""
    return slim_kept(config["evaluation"], w.budget, segmentation=is_segmentation_dataset(w.dataset))


def checkpoint_dir(model):
    return f"results/models/{model}/checkpoint"


def model_info(model):
    return f"results/models/{model}/model_info.json"


def training_dataset(model):
    _, train = training_of(config["models"][model])
    return train["dataset"] if train else None


def prepared_on(model):
    """The dataset prepare_model reads: the training set, or for a pretrained segmenter or CNN the
    first experiment's data (unit MACs depend on the input size; the unpruned accuracy is measured)."""
    if training_dataset(model):
        return training_dataset(model)
    if family_of(model).prepare_reads_data:
        return next(e["dataset"] for e in config["experiments"].values() if e["model"] == model)
    return None


def dataset_files(dataset):
    if is_image_dataset(dataset) or is_segmentation_dataset(dataset):
        return multiext(f"results/data/{dataset}/", "split.json", "source.json")
    return multiext(f"results/data/{dataset}/", "sentences.csv", "split.json")


def eval_runs():
    """Every evaluation of the run, as the wildcards of its metrics file (collect reads them here,
    not back from the paths)."""
    return [
        {"model": config["experiments"][e]["model"], "dataset": config["experiments"][e]["dataset"], "method": method,
         "calibration_size": calibration_n(config, e), "seed": seed, "budget": b}
        for e in RUN["experiments"]
        for method in experiment_methods(config, e)
        for seed in experiment_seeds(config, e)
        for b in experiment_budgets(config, e)
    ]


def eval_files():
    return [f"results/eval/{r['model']}/{r['dataset']}/{r['method']}/calib{r['calibration_size']}-seed{r['seed']}/"
            f"budget{r['budget']}.json" for r in eval_runs()]


def image_dataset_inputs(w):
    source = config["datasets"][w.dataset]["source"]
    if source["kind"] == "cifar10" and "dir" not in source:  # dir: a local copy, nothing to download
        return {"cifar10": "results/downloads/cifar10/cifar-10-batches-py"}
    return {}


def segmentation_experiments():
    """Segmentation experiments of the run as (model, dataset)."""
    return [(m, d) for m, d in run_pairs() if is_segmentation_dataset(d)]


def cnn_experiments():
    """CNN experiments of the run, as "model/dataset" (the metrics table's experiment key)."""
    return [f"{m}/{d}" for m, d in run_pairs() if is_convnet(m)]


def published_references(arm):
    """Experiments of one arm of the run ("model/dataset" as in the metrics table) -> the published
    points to overlay (their `reference_points`, or None)."""
    return {f"{exp['model']}/{exp['dataset']}": exp.get("reference_points")
            for exp in (config["experiments"][name] for name in RUN["experiments"])
            if arm_of(exp["model"], exp["dataset"]) == arm}


def arm_of(model, dataset):
    """The report group of an experiment."""
    if config["datasets"][dataset]["source"]["kind"] in TEXT_SOURCES:
        return "Text arm"
    if is_segmentation_dataset(dataset):
        return "Segmentation arm"
    return "CNN arm" if is_convnet(model) else "Vision arm"


def _unit_figure_run(w):
    name = next(e for e in RUN["experiments"]
                if config["experiments"][e]["model"] == w.model and config["experiments"][e]["dataset"] == w.dataset)
    n, seed = calibration_n(config, name), experiment_seeds(config, name)[0]
    methods = experiment_methods(config, name)
    return f"{w.model}/{w.dataset}/{{}}/calib{n}-seed{seed}", methods, experiment_budgets(config, name)


def unit_figure_mask_methods(w):
    """The method of each of unit_figure_inputs' masks, in their order."""
    _, methods, budgets = _unit_figure_run(w)
    return [m for m in methods for _ in budgets]


def unit_figure_inputs(w):
    """Every method's mask at every budget (first seed) and the scores of the experiment's first method."""
    run, methods, budgets = _unit_figure_run(w)
    return {
        "masks": [f"results/masks/{run.format(m)}/budget{b}.json" for m in methods for b in budgets],
        "scores": f"results/scores/{run.format(scores_method(methods[0]))}/scores.parquet",
    }


def prepare_inputs(w):
    model = config["models"][w.model]
    inputs = {}
    if prepared_on(w.model):
        inputs["data"] = dataset_files(prepared_on(w.model))
    if model["source"]["kind"] == "hub":
        inputs["hub"] = f"results/hub/{w.model}"
    if model["source"]["kind"] == "url":
        inputs["weights"] = f"results/downloads/weights/{w.model}.pt"
    if model["source"]["kind"] == "local":  # the user's own checkpoint: a change reruns the model's jobs
        inputs["local"] = local_model_path(model["source"]["path"])
    return inputs


def local_model_path(path):
    """A models.<id>.source.path, resolved as the config check resolves it."""
    return str(in_repository(path, Path(workflow.basedir).parent))


def qualitative_inputs(w):
    dataset = next(d for m, d in segmentation_experiments() if m == w.model)
    exp = next(e for e in RUN["experiments"] if config["experiments"][e]["model"] == w.model)
    run = f"{w.model}/{dataset}/{experiment_methods(config, exp)[0]}/calib{calibration_n(config, exp)}-seed{experiment_seeds(config, exp)[0]}"
    budget = budget_label(config["evaluation"]["qualitative_budget"])
    return {
        "checkpoint": checkpoint_dir(w.model),
        "data": dataset_files(dataset),
        "slim": f"results/slim/{run}/budget{budget}",
        "metrics": f"results/eval/{run}/budget{budget}.json",
    }


def scoring_jobs():
    """Every (experiment, method, seed) of the run with the benchmark files of the jobs that scored it
    and its scores file: the pruning cost of each method (rule method_tables)."""
    jobs = []
    for e in RUN["experiments"]:
        exp = config["experiments"][e]
        model, dataset, n = exp["model"], exp["dataset"], calibration_n(config, e)
        for method in experiment_methods(config, e):
            entry = method_entry(method)
            for seed in experiment_seeds(config, e):
                run = f"{model}/{dataset}/{{}}/calib{n}-seed{seed}"
                if entry.sharded:
                    shards = shards_method(method)
                    merged = scores_method(method)
                    benchmarks = [f"benchmarks/score_shard/{run.format(shards)}/layer{layer}.tsv"
                                  for layer in range(config["models"][model]["num_layers"])]
                    benchmarks.append(f"benchmarks/merge_scores/{run.format(merged)}.tsv")
                else:
                    merged = scores_method(method)
                    scorer = "score" if entry.needs_calibration else "score_weights"
                    benchmarks = [f"benchmarks/{scorer}/{run.format(merged)}.tsv"]
                stages = method_settings(method) if has_mask_stages(config["methods"][method]) else {}
                if stages:  # per-mask stages (Kwon et al.'s) are part of the pruning cost
                    benchmarks += [f"benchmarks/tune_mask/{run.format(method)}/budget{b}.tsv"
                                   for b in experiment_budgets(config, e)]
                jobs.append({"experiment": f"{model}/{dataset}", "method": method, "kind": entry.name, "seed": seed,
                             "calibration_size": n, "scores": f"results/scores/{run.format(merged)}/scores.parquet",
                             "benchmarks": benchmarks, "masks_tuned": len(experiment_budgets(config, e)) if stages else 0,
                             "stages": {key: bool(stages.get(key)) for key in entry.stage_settings}})
    return jobs


def sweep_eval_files(w):
    """The evaluations a sweep reads, in the order of sweep_runs."""
    exp = config["experiments"][config["sweeps"][w.sweep]["experiment"]]
    return [f"results/eval/{exp['model']}/{exp['dataset']}/{run.method}/calib{run.n}-seed{run.seed}/budget{budget_label(run.budget)}.json"
            for run in sweep_runs(config, w.sweep)]
