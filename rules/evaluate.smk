rule evaluate:
    wildcard_constraints:
        dataset=datasets_of_kind(TEXT_SOURCES + IMAGE_SOURCES),
    input:
        checkpoint=lambda w: checkpoint_dir(w.model),
        info=lambda w: model_info(w.model),
        masks=mask_file,
        data=lambda w: dataset_files(w.dataset),
        latency_table=evaluation_latency_table,
    output:
        metrics="results/eval/{model}/{dataset}/{method}/calib{n}-seed{seed}/budget{budget}.json",
        slim=directory("results/slim/{model}/{dataset}/{method}/calib{n}-seed{seed}/budget{budget}"),
    params:
        device=DEVICE,
        family=lambda w: config["models"][w.model]["family"],
        max_length=lambda w: config["datasets"][w.dataset].get("max_length"),
        image_size=lambda w: config["datasets"][w.dataset].get("image_size"),
        pixels=lambda w: config["datasets"][w.dataset].get("pixels"),
        verify_atol=config["evaluation"]["verify_atol"],
        latency=config["evaluation"]["latency"],
        keep_slim=keeps_slim,
    # Latency is timed on evaluation.latency.threads cores; when that is every core, nothing runs
    # beside it.
    threads: config["evaluation"]["latency"].get("threads", config["threads"])
    resources:
        gpu=gpus,
        mem_mb=memory(4000),
        runtime=20,
    conda:
        "../envs/optin.yaml"
    log:
        "logs/evaluate/{model}/{dataset}/{method}/calib{n}-seed{seed}/budget{budget}.log",
    benchmark:
        "benchmarks/evaluate/{model}/{dataset}/{method}/calib{n}-seed{seed}/budget{budget}.tsv"
    script:
        "../scripts/evaluate.py"


rule evaluate_segmentation:
    # Slim = masked, reload, backbone MACs from weight shapes, whole-network MACs, mIoU, latency.
    wildcard_constraints:
        dataset=datasets_of_kind(SEGMENTATION_SOURCES),
    input:
        checkpoint=lambda w: checkpoint_dir(w.model),
        info=lambda w: model_info(w.model),
        masks="results/masks/{model}/{dataset}/{method}/calib{n}-seed{seed}/budget{budget}.json",
        data=lambda w: dataset_files(w.dataset),
    output:
        metrics="results/eval/{model}/{dataset}/{method}/calib{n}-seed{seed}/budget{budget}.json",
        slim=directory("results/slim/{model}/{dataset}/{method}/calib{n}-seed{seed}/budget{budget}"),
    params:
        device=DEVICE,
        verify_atol=config["evaluation"]["verify_atol"],
        latency=config["evaluation"]["latency"],
        keep_slim=keeps_slim,
    threads: config["evaluation"]["latency"].get("threads", config["threads"])
    resources:
        gpu=gpus,
        mem_mb=memory(4000),
        runtime=20,
    conda:
        "../envs/optin.yaml"
    log:
        "logs/evaluate/{model}/{dataset}/{method}/calib{n}-seed{seed}/budget{budget}.log",
    benchmark:
        "benchmarks/evaluate/{model}/{dataset}/{method}/calib{n}-seed{seed}/budget{budget}.tsv"
    script:
        "../scripts/evaluate_segmentation.py"


rule collect:
    input:
        evals=eval_files(),
        infos=lambda w: sorted({model_info(m) for m, _ in run_pairs()}),
    output:
        report(
            "results/tables/metrics.csv",
            caption="../workflow/report/metrics.rst",
            category="Text arm",
        ),
    params:
        runs=eval_runs(),  # the wildcards of each of input.evals, in order
    conda:
        "../envs/optin.yaml"
    log:
        "logs/collect/collect.log",
    benchmark:
        "benchmarks/collect/collect.tsv"
    localrule: True
    script:
        "../scripts/collect.py"
