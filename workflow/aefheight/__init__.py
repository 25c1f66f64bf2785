"""aefheight: surface height from AlphaEarth Foundations embeddings.

The package holds every step of the study as plain functions, one subpackage per stage of the
pipeline, in the order the data flows (:data:`STAGES`); a stage imports only from the stages
before it (tests/test_layers.py). Above them, the modules that see the whole study: ``cli``
(``python -m aefheight <step>``, what every rule runs), ``config`` (loads and checks the
config), ``guards`` (sizes and inputs checked before any job) and ``calibration`` (the synthetic
AOI's calibration script). The Snakemake rules live in ``workflow/rules/<stage>.smk``.
"""

__version__ = "0.1.0"

# The pipeline's stages, bottom up: each subpackage imports only from those listed before it.
STAGES = ("core", "inputs", "tiles", "split", "models", "train", "predict", "evaluate", "report")
