rule calibrate:
    input:
        checkpoint=lambda w: checkpoint_dir(w.model),
        data=lambda w: dataset_files(w.dataset),
    output:
        teacher="results/calibration/{model}/{dataset}/calib{n}-seed{seed}/teacher.pt",
        indices="results/calibration/{model}/{dataset}/calib{n}-seed{seed}/indices.json",
    params:
        device=DEVICE,
        n=lambda w: int(w.n),
        seed=lambda w: int(w.seed),
        draws=CALIBRATION_DRAWS,
        max_length=CALIB["max_length"],
        family=lambda w: config["models"][w.model]["family"],
        image_size=lambda w: config["datasets"][w.dataset].get("image_size"),
        pixels=lambda w: config["datasets"][w.dataset].get("pixels"),
    threads: 1
    resources:
        gpu=gpus,
        mem_mb=memory(4000),
        runtime=10,
    conda:
        "../envs/optin.yaml"
    log:
        "logs/calibrate/{model}/{dataset}/calib{n}-seed{seed}.log",
    benchmark:
        "benchmarks/calibrate/{model}/{dataset}/calib{n}-seed{seed}.tsv"
    script:
        "../scripts/calibrate.py"
