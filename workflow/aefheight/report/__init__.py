"""report: the study's product: claims, tables, k-fold summary, findings and figures."""
