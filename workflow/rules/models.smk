# Training (nets and the Ridge baseline) and whole-AOI prediction.


rule train_net:
    input:
        index="results/{aoi}/patches/index.parquet",
        embeddings="results/{aoi}/patches/embeddings.npy",
        dsm="results/{aoi}/patches/dsm.npy",
        split="results/{aoi}/split/split.gpkg",
        split_raster="results/{aoi}/split/split.tif",
    output:
        checkpoint="results/{aoi}/models/{model}/seed{seed}/checkpoint.pt",
        history="results/{aoi}/models/{model}/seed{seed}/history.csv",
    log:
        "results/{aoi}/logs/train/{model}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/train/{model}_seed{seed}.tsv"
    wildcard_constraints:
        model=one_of(NETS),
    conda:
        "../../envs/train_net.yaml"
    threads: lambda w: training_threads()
    resources:
        # one GPU (common.smk, training_gpus): `--gpus=1` on SLURM (profiles/slurm), and a
        # slot of the local `gpu` resource (profiles/default: gpu=1), so GPU trainings on a
        # workstation run one at a time; none on a CPU-only machine, so they run side by side
        gpu=lambda w: training_gpus(),
    params:
        model=lambda w: section_json("models", w.model),
        settings=lambda w: section_json("training"),
        store=lambda w, input: os.path.dirname(input.index),
        out_dir=lambda w, output: os.path.dirname(output.checkpoint),
    shell:
        "python -m aefheight train --model {wildcards.model} --model-settings {params.model:q}"
        " --settings {params.settings:q} --store {params.store} --split {input.split}"
        " --split-raster {input.split_raster}"
        " --seed {wildcards.seed} --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"


rule train_ridge:
    input:
        index="results/{aoi}/patches/index.parquet",
        embeddings="results/{aoi}/patches/embeddings.npy",
        dsm="results/{aoi}/patches/dsm.npy",
        split="results/{aoi}/split/split.gpkg",
        split_raster="results/{aoi}/split/split.tif",
    output:
        checkpoint="results/{aoi}/models/{model}/seed{seed}/checkpoint.pt",
        history="results/{aoi}/models/{model}/seed{seed}/history.csv",
    log:
        "results/{aoi}/logs/train/{model}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/train/{model}_seed{seed}.tsv"
    wildcard_constraints:
        model=one_of(RIDGES),
    conda:
        "../../envs/train_ridge.yaml"
    threads: 1
    params:
        model=lambda w: section_json("models", w.model),
        store=lambda w, input: os.path.dirname(input.index),
        out_dir=lambda w, output: os.path.dirname(output.checkpoint),
    shell:
        "python -m aefheight train --model {wildcards.model} --model-settings {params.model:q}"
        " --store {params.store} --split {input.split} --split-raster {input.split_raster}"
        " --seed {wildcards.seed}"
        " --out-dir {params.out_dir} > {log} 2>&1"


rule predict:
    input:
        embeddings="results/{aoi}/inputs/embeddings.tif",
        checkpoint="results/{aoi}/models/{model}/seed{seed}/checkpoint.pt",
    output:
        "results/{aoi}/predictions/{model}_seed{seed}.tif",
    log:
        "results/{aoi}/logs/predict/{model}_seed{seed}.log",
    benchmark:
        "results/{aoi}/benchmarks/predict/{model}_seed{seed}.tsv"
    conda:
        "../../envs/predict.yaml"
    threads: 2
    params:
        settings=lambda w: section_json("prediction"),
    shell:
        "python -m aefheight predict --settings {params.settings:q} --model {wildcards.model}"
        " --seed {wildcards.seed} --embeddings {input.embeddings}"
        " --checkpoint {input.checkpoint} --out {output} --threads {threads} > {log} 2>&1"
