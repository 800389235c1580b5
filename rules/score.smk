# One scoring job per layer: a unit of layer l needs only the cached layer-l input and the
# unpruned taps/logits, so the shards are independent jobs on a cluster.


rule score_shard:
    input:
        checkpoint=lambda w: checkpoint_dir(w.model),
        teacher="results/calibration/{model}/{dataset}/calib{n}-seed{seed}/teacher.pt",
    output:
        "results/scores/{model}/{dataset}/{method}/calib{n}-seed{seed}/shards/layer{layer}.parquet",
    params:
        method=lambda w: scoring_settings(w.method),
        family=lambda w: config["models"][w.model]["family"],
        layer=lambda w: int(w.layer),
        seed=lambda w: int(w.seed),
        chunk=config["scoring"]["chunk"],
    threads: config["threads"]
    resources:
        gpu=gpus,
        mem_mb=6000,
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
            "results/scores/{model}/{dataset}/{method}/calib{n}-seed{seed}/shards/layer{layer}.parquet",
            **w,
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


rule score_magnitude:
    # Baseline: L1 filter norms from the checkpoint's weights; no calibration data.
    wildcard_constraints:
        method=methods_of_kind("magnitude"),
    input:
        checkpoint=lambda w: checkpoint_dir(w.model),
    output:
        "results/scores/{model}/{dataset}/{method}/calib{n}-seed{seed}/scores.parquet",
    params:
        family=lambda w: config["models"][w.model]["family"],
    conda:
        "../envs/optin.yaml"
    log:
        "logs/score_magnitude/{model}/{dataset}/{method}/calib{n}-seed{seed}.log",
    benchmark:
        "benchmarks/score_magnitude/{model}/{dataset}/{method}/calib{n}-seed{seed}.tsv"
    localrule: True
    script:
        "../scripts/score_magnitude.py"
