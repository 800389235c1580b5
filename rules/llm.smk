# The decoder-LLM arm (config llm:, docs/llm.md): one checkpoint, one corpus, OPTIN against FLAP,
# Wanda-sp, LLM-Pruner, Minitron, magnitude and random on the same calibration windows and the same
# MAC search, every mask physically sliced, reloaded and evaluated by perplexity, zero-shot accuracy
# and latency.
rule llm_corpus:
    # Documents, split by document into calibration text and held-out perplexity text.
    output:
        documents="results/llm/data/{corpus}/documents.csv",
        split="results/llm/data/{corpus}/split.json",
    params:
        source=lambda w: LLM["corpora"][w.corpus]["source"],
        split=lambda w: LLM["corpora"][w.corpus]["split"],
    conda:
        "../envs/optin.yaml"
    log:
        "logs/llm_corpus/{corpus}.log",
    benchmark:
        "benchmarks/llm_corpus/{corpus}.tsv"
    localrule: True
    script:
        "../scripts/llm_corpus.py"


rule llm_prepare:
    # The GGUF (or local) checkpoint converted once to safetensors + tokenizer, and the dense model's
    # perplexity, zero-shot accuracy and a greedy answer, measured once for every evaluation.
    input:
        documents=lambda w: f"results/llm/data/{llm_corpus_of_model(w.model)}/documents.csv",
        split=lambda w: f"results/llm/data/{llm_corpus_of_model(w.model)}/split.json",
        zero_shot=lambda w: zero_shot_files(),
    output:
        checkpoint=directory("results/llm/models/{model}/checkpoint"),
        info="results/llm/models/{model}/model_info.json",
    params:
        source=lambda w: LLM["models"][w.model]["source"],
        channel_group=lambda w: LLM["models"][w.model]["channel_group"],
        # only what the dense measurements read: a latency or tolerance change reruns no preparation
        evaluation={k: v for k, v in LLM.get("evaluation", {}).items() if k in ("perplexity", "zero_shot")},
    threads: config["threads"]
    resources:
        mem_mb=memory(4000),
        runtime=30,
    conda:
        "../envs/optin.yaml"
    log:
        "logs/llm_prepare/{model}.log",
    benchmark:
        "benchmarks/llm_prepare/{model}.tsv"
    script:
        "../scripts/llm_prepare.py"


rule llm_calibrate:
    input:
        checkpoint=llm_model_file("checkpoint"),
        documents=llm_corpus_file("documents.csv"),
        split=llm_corpus_file("split.json"),
    output:
        teacher="results/llm/calibration/{exp}/seed{seed}/teacher.pt",
        windows="results/llm/calibration/{exp}/seed{seed}/windows.json",
    params:
        device=DEVICE,
        calibration=lambda w: llm_exp(w)["calibration"],
        seed=lambda w: int(w.seed),
    threads: 1
    resources:
        gpu=gpus,
        mem_mb=memory(4000),
        runtime=10,
    conda:
        "../envs/optin.yaml"
    log:
        "logs/llm_calibrate/{exp}/seed{seed}.log",
    benchmark:
        "benchmarks/llm_calibrate/{exp}/seed{seed}.tsv"
    script:
        "../scripts/llm_calibrate.py"


rule llm_score_shard:
    # OPTIN on one layer's query heads and channel groups: the engine of the encoder families
    # (scripts/score_shard.py), on the decoder's cached teacher.
    wildcard_constraints:
        method=llm_methods(sharded=True),
    input:
        checkpoint=llm_model_file("checkpoint"),
        teacher="results/llm/calibration/{exp}/seed{seed}/teacher.pt",
    output:
        "results/llm/scores/{exp}/{method}/seed{seed}/shards/layer{layer}.parquet",
    params:
        device=DEVICE,
        precision=config["scoring"].get("precision", "float32"),
        method=lambda w: OptinMethod.from_config(LLM["methods"][w.method]).shard_settings(),
        family="llama",
        layer=lambda w: int(w.layer),
        seed=lambda w: int(w.seed),
        chunk=LLM_RUN.get("chunk", 8),
        jobs_per_gpu=config["scoring"].get("jobs_per_gpu", 1),
    threads: config["threads"]
    resources:
        gpu=gpus,
        mem_mb=memory(6000),
        runtime=60,
    conda:
        "../envs/optin.yaml"
    log:
        "logs/llm_score_shard/{exp}/{method}/seed{seed}/layer{layer}.log",
    benchmark:
        "benchmarks/llm_score_shard/{exp}/{method}/seed{seed}/layer{layer}.tsv"
    script:
        "../scripts/score_shard.py"


rule llm_merge_scores:
    wildcard_constraints:
        method=llm_methods(sharded=True),
    input:
        shards=lambda w: expand("results/llm/scores/{exp}/{method}/seed{seed}/shards/layer{layer}.parquet", **w,
                                layer=range(llm_num_layers(w))),
        benchmarks=lambda w: expand("benchmarks/llm_score_shard/{exp}/{method}/seed{seed}/layer{layer}.tsv", **w,
                                    layer=range(llm_num_layers(w))),
        info=llm_model_file("model_info.json"),
    output:
        scores="results/llm/scores/{exp}/{method}/seed{seed}/scores.parquet",
        cost="results/llm/scores/{exp}/{method}/seed{seed}/cost.json",
    params:
        method=lambda w: OptinMethod.from_config(LLM["methods"][w.method]).scoring_settings(),
        calibration=lambda w: llm_exp(w)["calibration"],
    conda:
        "../envs/optin.yaml"
    log:
        "logs/llm_merge_scores/{exp}/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/llm_merge_scores/{exp}/{method}/seed{seed}.tsv"
    localrule: True
    script:
        "../scripts/llm_merge_scores.py"


rule llm_score_peer:
    # One calibration pass (LLM-Pruner: one backward) per method and seed, or none (magnitude, random).
    wildcard_constraints:
        method=llm_methods(sharded=False),
    input:
        checkpoint=llm_model_file("checkpoint"),
        teacher="results/llm/calibration/{exp}/seed{seed}/teacher.pt",
        info=llm_model_file("model_info.json"),
    output:
        scores="results/llm/scores/{exp}/{method}/seed{seed}/scores.parquet",
        cost="results/llm/scores/{exp}/{method}/seed{seed}/cost.json",
    params:
        device=DEVICE,
        method=lambda w: llm_scoring_settings(LLM["methods"][w.method]),
        seed=lambda w: int(w.seed),
    threads: config["threads"]
    resources:
        gpu=gpus,
        mem_mb=memory(6000),
        runtime=30,
    conda:
        "../envs/optin.yaml"
    log:
        "logs/llm_score_peer/{exp}/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/llm_score_peer/{exp}/{method}/seed{seed}.tsv"
    script:
        "../scripts/llm_score_peer.py"


rule llm_solve:
    input:
        scores=lambda w: f"results/llm/scores/{w.exp}/{llm_scores_of(w.method)}/seed{w.seed}/scores.parquet",
        info=llm_model_file("model_info.json"),
    output:
        "results/llm/masks/{exp}/{method}/seed{seed}/budget{budget}.json",
    params:
        method=lambda w: LLM["methods"][w.method],
        budget=lambda w: float(w.budget),
        mac_context=lambda w: llm_exp(w)["mac_context"],
    conda:
        "../envs/optin.yaml"
    log:
        "logs/llm_solve/{exp}/{method}/seed{seed}/budget{budget}.log",
    benchmark:
        "benchmarks/llm_solve/{exp}/{method}/seed{seed}/budget{budget}.tsv"
    localrule: True
    script:
        "../scripts/llm_solve.py"


rule llm_evaluate:
    # Slim = masked, reload with trust_remote_code, generate, MACs recounted from weight shapes,
    # perplexity, zero-shot accuracy, prefill and decode throughput against the dense model.
    input:
        checkpoint=llm_model_file("checkpoint"),
        info=llm_model_file("model_info.json"),
        masks="results/llm/masks/{exp}/{method}/seed{seed}/budget{budget}.json",
        documents=llm_corpus_file("documents.csv"),
        split=llm_corpus_file("split.json"),
        zero_shot=lambda w: zero_shot_files(),
    output:
        metrics="results/llm/eval/{exp}/{method}/seed{seed}/budget{budget}.json",
        slim=directory("results/llm/slim/{exp}/{method}/seed{seed}/budget{budget}"),
    params:
        device=DEVICE,
        evaluation=LLM.get("evaluation"),
        keep_slim=lambda w: w.method in LLM["evaluation"].get("keep_slim", []),
    threads: LLM.get("evaluation", {}).get("latency", {}).get("threads", 1)
    resources:
        gpu=gpus,
        mem_mb=memory(4000),
        runtime=20,
    conda:
        "../envs/optin.yaml"
    log:
        "logs/llm_evaluate/{exp}/{method}/seed{seed}/budget{budget}.log",
    benchmark:
        "benchmarks/llm_evaluate/{exp}/{method}/seed{seed}/budget{budget}.tsv"
    script:
        "../scripts/llm_evaluate.py"


rule llm_report:
    # The tidy table, the method table (mean +- std over seeds, scoring cost) and the figure.
    input:
        evals=[f"results/llm/eval/{r['exp']}/{r['method']}/seed{r['seed']}/budget{r['budget']}.json" for r in llm_runs()] if LLM_RUN["experiments"] else [],
        costs=sorted({f"results/llm/scores/{r['exp']}/{llm_scores_of(r['method'])}/seed{r['seed']}/cost.json" for r in llm_runs()}) if LLM_RUN["experiments"] else [],
        infos=sorted({f"results/llm/models/{LLM['experiments'][r['exp']]['model']}/model_info.json" for r in llm_runs()}) if LLM_RUN["experiments"] else [],
    output:
        table="results/llm/tables/metrics.csv",
        methods="results/llm/tables/methods.md",
        figure=multiext("results/llm/figures/perplexity_vs_macs", ".png", ".pdf"),
    params:
        runs=llm_runs() if LLM_RUN["experiments"] else [],
        experiments=LLM.get("experiments"),
        methods=LLM.get("methods"),
    conda:
        "../envs/optin.yaml"
    log:
        "logs/llm_report/report.log",
    benchmark:
        "benchmarks/llm_report/report.tsv"
    localrule: True
    script:
        "../scripts/llm_report.py"
