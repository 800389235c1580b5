# The decoder-LLM arm's settings and input functions (rules/llm.smk).
from optin.config import budget_label
from optin.llm_config import ONE_PASS_KINDS

LLM = config.get("llm") or {}
LLM_RUN = LLM.get("run", {"experiments": []})


def llm_exp(w):
    return LLM["experiments"][w.exp]


def llm_method_kind(method):
    return LLM["methods"][method]["kind"]


def llm_methods_of_kind(*kinds):
    return name_pattern([m for m, e in LLM.get("methods", {}).items() if e["kind"] in kinds])


def llm_seeds(exp, method):
    entry = LLM["experiments"][exp]
    if llm_method_kind(method) == "optin":
        return entry.get("optin_seeds", entry["seeds"])
    if llm_method_kind(method) == "magnitude":
        return entry["seeds"][:1]  # weights only: every seed would give the same mask
    return entry["seeds"]


def llm_runs():
    return [{"exp": e, "method": m, "seed": s, "budget": budget_label(b)}
            for e in LLM_RUN["experiments"] for m in LLM["experiments"][e]["methods"]
            for s in llm_seeds(e, m) for b in LLM["experiments"][e]["budgets"]]


def llm_scores_of(method):
    """FLAP's two structures search the same scores: the first FLAP method's run scores both."""
    entry = LLM["methods"][method]
    if entry["kind"] != "flap":
        return method
    return next(m for m, e in LLM["methods"].items() if e["kind"] == "flap")


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
    from optin.llm_config import model_layers

    return model_layers(LLM["models"][llm_exp(w)["model"]]["source"], Path(workflow.basedir).parent)


LLM_TARGETS = []
if LLM_RUN["experiments"]:
    LLM_TARGETS = [f"results/llm/eval/{r['exp']}/{r['method']}/seed{r['seed']}/budget{r['budget']}.json" for r in llm_runs()]
    LLM_TARGETS += ["results/llm/tables/metrics.csv", "results/llm/tables/methods.md"]
    LLM_TARGETS += expand("results/llm/figures/perplexity_vs_macs.{ext}", ext=["png", "pdf"])
