# One scoring job per layer: a unit of layer l needs only the cached layer-l input and the
# unpruned taps/logits, so the shards are independent jobs on a cluster.


rule score_shard:
    wildcard_constraints:
        method=sharded_methods(),
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
        method=sharded_methods(),
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


rule score_weights:
    # Methods scored from the checkpoint's weights alone or a seeded draw (magnitude, random): no
    # calibration data, one light job.
    wildcard_constraints:
        method=one_pass_methods(needs_calibration=False),
    input:
        checkpoint=lambda w: checkpoint_dir(w.model),
    output:
        "results/scores/{model}/{dataset}/{method}/calib{n}-seed{seed}/scores.parquet",
    params:
        device="cpu",
        family=lambda w: config["models"][w.model]["family"],
        method=lambda w: scoring_settings(w.method),
        seed=lambda w: int(w.seed),
    threads: 1
    conda:
        "../envs/optin.yaml"
    log:
        "logs/score_weights/{model}/{dataset}/{method}/calib{n}-seed{seed}.log",
    benchmark:
        "benchmarks/score_weights/{model}/{dataset}/{method}/calib{n}-seed{seed}.tsv"
    localrule: True
    script:
        "../scripts/score.py"


rule score:
    # Every other method the registry scores in one pass (Kwon et al.'s Fisher, NViT's saliency...):
    # on the labelled first calibration draw, the same sentences or images OPTIN scores on. A
    # latency-aware term reads the model's latency table (NViT's latency_eta > 0).
    wildcard_constraints:
        method=one_pass_methods(needs_calibration=True),
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
        seed=lambda w: int(w.seed),
    threads: config["threads"]
    resources:
        gpu=gpus,
        mem_mb=memory(6000),
        runtime=60,
    conda:
        "../envs/optin.yaml"
    log:
        "logs/score/{model}/{dataset}/{method}/calib{n}-seed{seed}.log",
    benchmark:
        "benchmarks/score/{model}/{dataset}/{method}/calib{n}-seed{seed}.tsv"
    script:
        "../scripts/score.py"
