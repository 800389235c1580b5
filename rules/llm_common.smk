# The decoder-LLM arm's settings and input functions (rules/llm.smk).
from optin.workflow.config import budget_label
from optin.methods.registry import entry_of
from optin.methods.registry import scoring_settings as llm_scoring_settings

LLM = config.get("llm") or {}
LLM_RUN = LLM.get("run", {"experiments": []})


def llm_exp(w):
    return LLM["experiments"][w.exp]


def llm_method(method):
    """The registry entry of a configured LLM method."""
    return entry_of(LLM["methods"][method])


def llm_methods(sharded):
    """Configured LLM methods scored per layer shard (OPTIN) or in one job (the peers)."""
    return name_pattern([m for m in LLM.get("methods", {}) if llm_method(m).sharded == sharded])


def llm_seeds(exp, method):
    entry = LLM["experiments"][exp]
    if llm_method(method).sharded:
        return entry.get("optin_seeds", entry["seeds"])
    if not llm_method(method).seeded:
        return entry["seeds"][:1]  # weights only: every seed would give the same mask
    return entry["seeds"]


def llm_runs():
    return [{"exp": e, "method": m, "seed": s, "budget": budget_label(b)}
            for e in LLM_RUN["experiments"] for m in LLM["experiments"][e]["methods"]
            for s in llm_seeds(e, m) for b in LLM["experiments"][e]["budgets"]]


def llm_scores_of(method):
    """The first configured method with the same scoring settings, whose scores it reuses (FLAP's
    structures and bias compensation only change the search)."""
    return first_alike(method, lambda m: llm_scoring_settings(LLM["methods"][m]), list(LLM["methods"]))


def llm_model_file(name):
    """Input function: ``name`` in the prepared model directory of the job's experiment."""
    return lambda w: f"results/llm/models/{llm_exp(w)['model']}/{name}"


def llm_corpus_file(name):
    return lambda w: f"results/llm/data/{llm_exp(w)['corpus']}/{name}"


def zero_shot_files():
    return multiext(f"results/data/{LLM['evaluation']['zero_shot']['dataset']}/", "sentences.csv", "split.json")


def llm_corpus_of_model(model):
    return next(e["corpus"] for e in LLM["experiments"].values() if e["model"] == model)


def llm_num_layers(w):
    """Layers of the experiment's model, read from its GGUF header or config at parse time."""
    from optin.workflow.llm_config import model_layers

    return model_layers(LLM["models"][llm_exp(w)["model"]]["source"], Path(workflow.basedir).parent)


LLM_TARGETS = []
if LLM_RUN["experiments"]:
    LLM_TARGETS = [f"results/llm/eval/{r['exp']}/{r['method']}/seed{r['seed']}/budget{r['budget']}.json" for r in llm_runs()]
    LLM_TARGETS += ["results/llm/tables/metrics.csv", "results/llm/tables/methods.md"]
    LLM_TARGETS += expand("results/llm/figures/perplexity_vs_macs.{ext}", ext=["png", "pdf"])
