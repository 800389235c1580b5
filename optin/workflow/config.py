"""Cross-checks of a workflow configuration that a JSON schema cannot express.

Runs when the DAG is built, before any job: every message names the offending key and what was
expected. Kept light (no torch / transformers import) because Snakemake evaluates it at parse time.
"""

from __future__ import annotations

import re
from pathlib import Path

from optin.arch.registry import FAMILIES, IMAGE_SOURCES, SEGMENTATION_SOURCES, TEXT_SOURCES, TRAINING_KEYS
from optin.workflow.llm_config import llm_errors
from optin.engine.settings import OptinMethod
from optin.methods.registry import entry_of, resolved_settings
from optin.models import PACKAGED_MODELS

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ConfigError(ValueError):
    pass


def budget_label(budget: float) -> str:
    return f"{budget:.3f}"


# Outputs of each GLUE task's classifier (STS-B: one regression output).
GLUE_NUM_LABELS = {"mnli": 3, "qqp": 2, "qnli": 2, "sst2": 2, "stsb": 1, "mrpc": 2}
DINOV2_PATCH = 14


def experiment_methods(config: dict, experiment: str) -> list[str]:
    return config["experiments"][experiment].get("methods", config["run"]["methods"])


def experiment_seeds(config: dict, experiment: str) -> list[int]:
    """Calibration draws (and random-baseline draws) the experiment is repeated over."""
    return config["experiments"][experiment].get("seeds", config["run"]["seeds"])


def experiment_budgets(config: dict, experiment: str) -> list[str]:
    """Budget labels of the experiment (its own ``budgets``, else run.budgets)."""
    return [budget_label(b) for b in config["experiments"][experiment].get("budgets", config["run"]["budgets"])]


def in_repository(path: str, base_dir: Path) -> Path:
    """A configured file or directory: relative paths are relative to the repository (``base_dir``)."""
    return Path(path) if Path(path).is_absolute() else Path(base_dir) / path


def slim_kept(evaluation: dict, budget: str, segmentation: bool) -> bool:
    """Whether a slim checkpoint stays after its evaluation (evaluation.keep_slim: all, none or a list
    of budgets). A segmentation run keeps its qualitative budget: segmentation_figure reads it."""
    keep = evaluation.get("keep_slim", "all")
    qualitative = evaluation.get("qualitative_budget")
    if segmentation and qualitative is not None and budget == budget_label(qualitative):
        return True
    return keep == "all" or (keep != "none" and budget in [budget_label(b) for b in keep])


def calibration_n(config: dict, experiment: str) -> int:
    return config["experiments"][experiment].get("calibration_n", config["calibration"]["n"])


# Two disjoint calibration batches are always drawn (cheap), so that adding a method that scores
# heads and neurons on different batches (§4.7) never invalidates the cached calibration.
CALIBRATION_DRAWS = 2


def schema_errors(config: dict, schema: dict) -> list[str]:
    """One line per violation of the config schema: the key path, what was expected and, for an
    unknown key, the nearest valid one (snakemake's own validation prints the whole config)."""
    import difflib

    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    lines = []
    for error in sorted(Draft202012Validator(schema).iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]):
        path = ".".join(str(p) for p in error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = sorted(error.schema.get("properties", {}))
            for key in sorted(k for k in error.instance if k not in allowed):
                near = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                lines.append(f"{path + '.' if path else ''}{key}: unknown key; expected one of {allowed}"
                             + (f" (did you mean {near[0]!r}?)" if near else ""))
            continue
        message = error.message
        if error.validator in ("oneOf", "anyOf") and error.context:
            # each alternative's own complaint, or the deepest one where they are nested
            direct = list(dict.fromkeys(e.message for e in error.context if not e.relative_path))
            message = " or ".join(direct) if direct else best_match(error.context).message
        message = message if len(message) <= 200 else message[:200] + " ..."
        lines.append(f"{path or '(top level)'}: {message}")
    return lines


def validate_schema(config: dict, schema_path: Path) -> None:
    import yaml

    problems = schema_errors(config, yaml.safe_load(Path(schema_path).read_text()))
    if problems:
        raise ConfigError(f"invalid configuration ({schema_path.name}):\n  - " + "\n  - ".join(problems))


def check(config: dict, base_dir: Path = Path(".")) -> None:
    errors: list[str] = []
    run = config["run"]
    for name in run["experiments"]:
        if name not in config["experiments"]:
            errors.append(f"run.experiments: unknown experiment {name!r}; defined: {sorted(config['experiments'])}")
    for name, exp in config["experiments"].items():
        if exp["model"] not in config["models"]:
            errors.append(f"experiments.{name}.model: unknown model id {exp['model']!r}; defined: {sorted(config['models'])}")
        if exp["dataset"] not in config["datasets"]:
            errors.append(f"experiments.{name}.dataset: unknown dataset {exp['dataset']!r}; defined: {sorted(config['datasets'])}")
        if exp["model"] in config["models"] and exp["dataset"] in config["datasets"]:
            family = FAMILIES[config["models"][exp["model"]]["family"]]
            kind = config["datasets"][exp["dataset"]]["source"]["kind"]
            unfit = family.error_if_unfit(name, kind)
            if unfit:
                errors.append(f"{unfit} (dataset {exp['dataset']!r})")
            task = config["datasets"][exp["dataset"]]["source"].get("task")
            labels = config["models"][exp["model"]]["num_labels"]
            if kind == "glue" and task in GLUE_NUM_LABELS and labels != GLUE_NUM_LABELS[task]:
                errors.append(f"models.{exp['model']}.num_labels: GLUE {task} (experiment {name}) needs "
                              f"{GLUE_NUM_LABELS[task]} output(s), got {labels}")
            if labels == 1 and not (kind == "glue" and task == "stsb"):
                errors.append(f"models.{exp['model']}.num_labels: 1 output (a regressor) is only for GLUE stsb, "
                              f"experiment {name} uses dataset {exp['dataset']!r}")
            for method in exp.get("methods", []):
                if method not in config["methods"]:
                    errors.append(f"experiments.{name}.methods: unknown method {method!r}; defined: {sorted(config['methods'])}")
            for method in experiment_methods(config, name):
                errors += _method_fit_errors(f"experiments.{name}", family, method, config["methods"].get(method, {}))
            if family.needs_pixels and "pixels" not in config["datasets"][exp["dataset"]]:
                errors.append(f"datasets.{exp['dataset']}.pixels: a CNN experiment ({name}) needs the input statistics "
                              "its model was trained with ({channels, mean, std})")
    for name in run["methods"]:
        if name not in config["methods"]:
            errors.append(f"run.methods: unknown method {name!r}; defined: {sorted(config['methods'])}")
    for name, method in config["methods"].items():
        try:
            resolved_settings(method)
        except ValueError as err:
            errors.append(f"methods.{name}: {err}")
    labels = [budget_label(b) for b in run["budgets"]]
    if len(set(labels)) != len(labels):
        errors.append(f"run.budgets: budgets {run['budgets']} collide at 3 decimals ({labels})")
    qualitative = config["evaluation"].get("qualitative_budget")
    for name in run["experiments"]:
        exp = config["experiments"].get(name)
        if exp is None:
            continue
        own = experiment_budgets(config, name)
        if "budgets" in exp and len(set(own)) != len(own):
            errors.append(f"experiments.{name}.budgets: budgets {exp['budgets']} collide at 3 decimals ({own})")
        segmenting = config["datasets"].get(exp["dataset"], {}).get("source", {}).get("kind") in SEGMENTATION_SOURCES
        if segmenting and (qualitative is None or budget_label(qualitative) not in own):
            errors.append(f"evaluation.qualitative_budget: must be one of the budgets {own} of segmentation experiment "
                          f"{name}, got {qualitative}")
    for name, model in config["models"].items():
        source = model["source"]
        where = f"models.{name}.source"
        if source["kind"] == "packaged" and source.get("package") not in PACKAGED_MODELS:
            errors.append(f"{where}.package: unknown packaged model id {source.get('package')!r}; known: {sorted(PACKAGED_MODELS)}")
        if source["kind"] == "hub":
            if not HUB_ID.match(str(source.get("id", ""))):
                errors.append(f"{where}.id: {source.get('id')!r} is not a hub model id of the form org/name")
            if not source.get("revision"):
                errors.append(f"{where}.revision: hub models must pin a revision (commit hash or tag)")
        family = FAMILIES[model["family"]]
        if source["kind"] == "local":
            errors += _local_model_errors(where, family, source, base_dir)
        if source["kind"] not in family.source_kinds:
            errors.append(f"{where}.kind: {family.name} models come from {list(family.source_kinds)}, got {source['kind']!r}")
        for key in TRAINING_KEYS:
            if key in model and key not in family.training:
                errors.append(f"models.{name}.{key}: not a {family.name} setting (a {family.name} model trains with "
                              f"{' or '.join(family.training) or 'nothing'})")
            elif model.get(key) and model[key]["dataset"] not in config["datasets"]:
                errors.append(f"models.{name}.{key}.dataset: unknown dataset {model[key]['dataset']!r}")
        given = [key for key in family.training if model.get(key)]
        if len(given) > 1:
            errors.append(f"models.{name}: give one of {given}, not both (each trains the model its own way)")
        errors += family.constraints(name, model, config)
    for name, dataset in config["datasets"].items():
        source = dataset["source"]
        if source["kind"] in TEXT_SOURCES and "max_length" not in dataset:
            errors.append(f"datasets.{name}.max_length: text datasets need a maximum token length")
        if source["kind"] in IMAGE_SOURCES:
            if "image_size" not in dataset:
                errors.append(f"datasets.{name}.image_size: image datasets need the model input size in pixels")
        if source["kind"] in ("fashion_mnist", "fashion_mnist_canvases"):
            errors += _check_fashion_mnist(name, source.get("dir", "auto"), base_dir)
        if source["kind"] == "fashion_mnist_canvases":
            for key in ("size", "items", "threshold", "classes"):
                if key not in source:
                    errors.append(f"datasets.{name}.source.{key}: canvas datasets need it (see config.yaml)")
            labels = [label for group in source.get("classes", {}).values() for label in group]
            if len(labels) != len(set(labels)):
                errors.append(f"datasets.{name}.source.classes: a Fashion-MNIST label belongs to two classes ({labels})")
            if "size" in source and "items" in source and source["items"][1] > (source["size"] // 32) ** 2:
                errors.append(f"datasets.{name}.source.items: at most {(source['size'] // 32) ** 2} items fit a "
                              f"{source['size']} px canvas (32 px cells), got {source['items']}")
        if source["kind"] == "cityscapes" and "root" not in source:
            errors.append(f"datasets.{name}.source.root: cityscapes needs the directory holding leftImg8bit/ and gtFine/")
        if source["kind"] == "imagefolder":
            # The directories themselves are checked by the split rule, the first job that reads
            # them, so that a dry run of the paper configuration works without ImageNet.
            for part in ("train", "test"):
                if part not in source:
                    errors.append(f"datasets.{name}.source.{part}: imagefolder datasets need a {part} directory")
        if source["kind"] == "glue" and not {"task", "revision"} <= set(source):
            errors.append(f"datasets.{name}.source: a glue dataset needs task (one of mnli, qqp, qnli, sst2, stsb, mrpc) "
                          "and revision (a commit of the nyu-mll/glue hub dataset)")
        if source["kind"] == "csv":
            path = in_repository(source["path"], base_dir)
            if not path.is_file():
                errors.append(f"datasets.{name}.source.path: dataset file {path} does not exist (expected a CSV with columns text,label)")
    # Sizes matter only for the experiments that run (a config file may define more).
    for name in [e for e in run["experiments"] if e in config["experiments"]]:
        exp = config["experiments"][name]
        dataset = config["datasets"].get(exp["dataset"])
        if dataset is None:
            continue
        n_calib, pool = calibration_n(config, name), dataset["split"]["calib_pool"]
        if n_calib * CALIBRATION_DRAWS > pool:
            errors.append(
                f"experiments.{name}: {CALIBRATION_DRAWS} calibration batches of {n_calib} need {n_calib * CALIBRATION_DRAWS} "
                f"rows but datasets.{exp['dataset']}.split.calib_pool is {pool}"
            )
        model = config["models"].get(exp["model"])
        size = dataset.get("image_size")
        if model and size and model["source"]["kind"] == "dinov2_onnx" and size % DINOV2_PATCH:
            errors.append(f"datasets.{exp['dataset']}.image_size: {size} px is not a multiple of DINOv2's "
                          f"{DINOV2_PATCH} px patches (experiment {name})")
    errors += sweep_errors(config)
    errors += llm_errors(config, base_dir)
    for name, sweep in config.get("sweeps", {}).items():
        model = config["models"].get(config["experiments"].get(sweep["experiment"], {}).get("model"))
        if model is not None:
            for method in dict.fromkeys([p["method"] for p in sweep.get("points", [])] + list(sweep.get("methods", []))):
                if method in config["methods"]:
                    errors += _method_fit_errors(f"sweeps.{name}", FAMILIES[model["family"]], method, config["methods"][method])
    if errors:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(errors))


def _local_model_errors(where: str, family, source: dict, base_dir: Path) -> list[str]:
    """A local checkpoint: a directory with config.json for the Hugging Face families, a state-dict
    file for the CNNs (built from source.convnet_config)."""
    if "path" not in source:
        return [f"{where}.path: a local source needs the checkpoint's path"]
    path = in_repository(source["path"], base_dir)
    if family.unit_kinds == ("channel",):
        if not path.is_file():
            return [f"{where}.path: {path} is not a file (expected a state dict saved with torch.save, "
                    "keys as optin.models.cnn builds source.convnet_config)"]
    elif not (path / "config.json").is_file():
        return [f"{where}.path: {path} has no config.json (expected a directory written by save_pretrained)"]
    return []


def _method_fit_errors(where: str, family, method: str, entry: dict) -> list[str]:
    """Whether a method can run on a family's models."""
    errors = []
    if family.staged_taps and _resolved(entry).md_fresh_subsets:
        errors.append(f"{where}: method {method!r} draws one MD row subset per unit for every tap, "
                      f"but {family.name} stages have taps of different sizes (set md_fresh_subsets: false)")
    try:
        method_entry = entry_of(entry)
    except ValueError:
        return errors  # reported under methods.<name>
    fit = method_entry.fit_error(family)
    if fit:
        errors.append(f"{where}: method {method!r}: {fit}")
    needs_table = entry.get("budget_metric", "macs") == "latency" or entry.get("latency_eta", 0)
    if needs_table and family.cost_model != "encoder":
        errors.append(f"{where}: method {method!r} reads a latency lookup table, which is built for models of "
                      f"identical encoder layers (families {latency_table_families()}), not a {family.name} model")
    if entry.get("budget_metric", "macs") == "latency" and entry.get("prune_tokens"):
        errors.append(f"{where}: method {method!r} prunes tokens under a latency budget; token schedules are "
                      "searched under MACs only (set budget_metric: macs)")
    if method_entry.sharded and entry.get("tap", "default") != "default" and not family.movable_tap:
        errors.append(f"{where}: method {method!r} moves the tap, which is defined for "
                      f"{', '.join(families_with('movable_tap'))} models only")
    if method_entry.sharded and entry.get("prune_tokens") and not family.token_pruning:
        errors.append(f"{where}: method {method!r} prunes tokens, which only vision models "
                      f"(families {families_with('token_pruning')}) have")
    return errors


def latency_table_families() -> list[str]:
    return [name for name, f in FAMILIES.items() if f.cost_model == "encoder"]


def families_with(attribute: str) -> list[str]:
    return [name for name, f in FAMILIES.items() if getattr(f, attribute)]


def _resolved(method: dict) -> OptinMethod:
    try:
        return OptinMethod.from_config(method) if entry_of(method).sharded else OptinMethod()
    except ValueError:
        return OptinMethod()  # reported under methods.<name>


def _check_fashion_mnist(name: str, directory: str, base_dir: Path) -> list[str]:
    from optin.data.image_files import fashion_mnist_candidates, locate_fashion_mnist

    if locate_fashion_mnist(directory, base_dir) is not None:
        return []
    return [f"datasets.{name}.source.dir: no Fashion-MNIST IDX files in {', '.join(fashion_mnist_candidates(directory))} "
            "(install the Debian package dataset-fashion-mnist, or run `make data-deps`)"]


def sweep_errors(config: dict) -> list[str]:
    """What is wrong with config['sweeps'] (empty when nothing is), each naming the key."""
    errors = []
    for name, sweep in config.get("sweeps", {}).items():
        where = f"sweeps.{name}"
        experiment = config["experiments"].get(sweep["experiment"])
        if experiment is None:
            errors.append(f"{where}.experiment: unknown experiment {sweep['experiment']!r}; defined: {sorted(config['experiments'])}")
            continue
        by_points, by_size = "points" in sweep, "calibration_n" in sweep
        if by_points == by_size:
            errors.append(f"{where}: give either points (one method per value) or calibration_n with methods, not "
                          f"{'both' if by_points else 'neither'}")
            continue
        if by_size and not sweep.get("methods"):
            errors.append(f"{where}.methods: a calibration_n sweep needs the methods to compare at each size")
        if by_points and "methods" in sweep:
            errors.append(f"{where}.methods: a points sweep names its method per point (points[i].method)")
        methods = [p["method"] for p in sweep.get("points", [])] + list(sweep.get("methods", []))
        for method in methods:
            if method not in config["methods"]:
                errors.append(f"{where}: unknown method {method!r}; defined: {sorted(config['methods'])}")
        values = [str(p["value"]) for p in sweep.get("points", [])] + [str(n) for n in sweep.get("calibration_n", [])]
        if len(set(values)) != len(values):
            errors.append(f"{where}: repeated value in {values} (each x position once)")
        pool = config["datasets"].get(experiment["dataset"], {}).get("split", {}).get("calib_pool")
        sizes = sweep.get("calibration_n", [calibration_n(config, sweep["experiment"])])
        if pool is not None and max(sizes) * CALIBRATION_DRAWS > pool:
            errors.append(f"{where}.calibration_n: {CALIBRATION_DRAWS} calibration batches of {max(sizes)} need "
                          f"{max(sizes) * CALIBRATION_DRAWS} rows but datasets.{experiment['dataset']}.split.calib_pool is {pool}")
    return errors
