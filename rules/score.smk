# One scoring job per layer: a unit of layer l needs only the cached layer-l input and the
# unpruned taps/logits, so the shards are independent jobs on a cluster.


rule score_shard:
    wildcard_constraints:
        method=methods_of_kind("optin"),
    input:
        checkpoint=lambda w: checkpoint_dir(w.model),
        teacher="results/calibration/{model}/{dataset}/calib{n}-seed{seed}/teacher.pt",
    output:
        "results/scores/{model}/{dataset}/{method}/calib{n}-seed{seed}/shards/layer{layer}.parquet",
    params:
        device=DEVICE,
        precision=config["scoring"].get("precision", "float32"),
        method=lambda w: shard_settings(w.method),
        family=lambda w: config["models"][w.model]["family"],
        layer=lambda w: int(w.layer),
        seed=lambda w: int(w.seed),
        chunk=config["scoring"]["chunk"],
        jobs_per_gpu=config["scoring"].get("jobs_per_gpu", 1),
    threads: config["threads"]
    resources:
        gpu=gpus,
        mem_mb=memory(6000),
        runtime=60,
    conda:
        "../envs/optin.yaml"
    log:
        "logs/score_shard/{model}/{dataset}/{method}/calib{n}-seed{seed}/layer{layer}.log",
    benchmark:
        "benchmarks/score_shard/{model}/{dataset}/{method}/calib{n}-seed{seed}/layer{layer}.tsv"
    script:
        "../scripts/score_shard.py"


rule merge_scores:
    wildcard_constraints:
        method=methods_of_kind("optin"),
    input:
        lambda w: expand(
            "results/scores/{model}/{dataset}/{shards}/calib{n}-seed{seed}/shards/layer{layer}.parquet",
            **w,
            shards=shards_method(w.method),
            layer=range(config["models"][w.model]["num_layers"]),
        ),
    output:
        "results/scores/{model}/{dataset}/{method}/calib{n}-seed{seed}/scores.parquet",
    params:
        method=lambda w: scoring_settings(w.method),
        num_layers=lambda w: config["models"][w.model]["num_layers"],
    conda:
        "../envs/optin.yaml"
    log:
        "logs/merge_scores/{model}/{dataset}/{method}/calib{n}-seed{seed}.log",
    benchmark:
        "benchmarks/merge_scores/{model}/{dataset}/{method}/calib{n}-seed{seed}.tsv"
    localrule: True
    script:
        "../scripts/merge_scores.py"


rule score_baseline:
    # Baselines scored from the checkpoint's weights (magnitude) or a seeded draw (random); no calibration data.
    wildcard_constraints:
        method=methods_of_kind("magnitude", "random"),
    input:
        checkpoint=lambda w: checkpoint_dir(w.model),
    output:
        "results/scores/{model}/{dataset}/{method}/calib{n}-seed{seed}/scores.parquet",
    params:
        family=lambda w: config["models"][w.model]["family"],
        kind=lambda w: config["methods"][w.method]["kind"],
        seed=lambda w: int(w.seed),
    conda:
        "../envs/optin.yaml"
    log:
        "logs/score_baseline/{model}/{dataset}/{method}/calib{n}-seed{seed}.log",
    benchmark:
        "benchmarks/score_baseline/{model}/{dataset}/{method}/calib{n}-seed{seed}.tsv"
    localrule: True
    script:
        "../scripts/score_baseline.py"


rule score_kwon:
    # Kwon et al. 2022: Fisher of the head/neuron masks under the task loss (per sample, or per
    # mini-batch as their code with fisher_batch_size), on the labelled first calibration draw (the
    # same sentences or images OPTIN scores on).
    wildcard_constraints:
        method=methods_of_kind("kwon"),
    input:
        checkpoint=lambda w: checkpoint_dir(w.model),
        teacher="results/calibration/{model}/{dataset}/calib{n}-seed{seed}/teacher.pt",
    output:
        "results/scores/{model}/{dataset}/{method}/calib{n}-seed{seed}/scores.parquet",
    params:
        device=DEVICE,
        family=lambda w: config["models"][w.model]["family"],
        method=lambda w: scoring_settings(w.method),
    threads: config["threads"]
    resources:
        gpu=gpus,
        mem_mb=memory(6000),
        runtime=60,
    conda:
        "../envs/optin.yaml"
    log:
        "logs/score_kwon/{model}/{dataset}/{method}/calib{n}-seed{seed}.log",
    benchmark:
        "benchmarks/score_kwon/{model}/{dataset}/{method}/calib{n}-seed{seed}.tsv"
    script:
        "../scripts/score_kwon.py"


rule score_nvit:
    # NViT's Hessian-aware saliency (optin.nvit): per mini-batch of fisher_batch_size samples, each
    # head's / neuron's (sum of w * dL/dw over its weights / c)^2, averaged; on the labelled first
    # calibration draw, as score_kwon. latency_eta > 0 subtracts their latency term (the table).
    wildcard_constraints:
        method=methods_of_kind("nvit"),
    input:
        checkpoint=lambda w: checkpoint_dir(w.model),
        teacher="results/calibration/{model}/{dataset}/calib{n}-seed{seed}/teacher.pt",
        latency_table=scoring_latency_table,
    output:
        "results/scores/{model}/{dataset}/{method}/calib{n}-seed{seed}/scores.parquet",
    params:
        device=DEVICE,
        family=lambda w: config["models"][w.model]["family"],
        method=lambda w: scoring_settings(w.method),
    threads: config["threads"]
    resources:
        gpu=gpus,
        mem_mb=memory(6000),
        runtime=60,
    conda:
        "../envs/optin.yaml"
    log:
        "logs/score_nvit/{model}/{dataset}/{method}/calib{n}-seed{seed}.log",
    benchmark:
        "benchmarks/score_nvit/{model}/{dataset}/{method}/calib{n}-seed{seed}.tsv"
    script:
        "../scripts/score_nvit.py"
