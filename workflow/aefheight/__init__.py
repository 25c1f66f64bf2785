"""aefheight: surface height from AlphaEarth Foundations embeddings.

The package holds every step of the study as plain functions; the Snakemake rules under
``workflow/rules`` only call its command line (``aefheight <step> ...``).
"""

__version__ = "0.1.0"
