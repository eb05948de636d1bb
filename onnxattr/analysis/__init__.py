"""The analysis stage, which reads a model space: pairwise distances (``distances``), affinity
estimators (``estimators``), evaluation against an oracle (``evaluation``), trees (``trees``),
plots (``plots``) and the HTML report (``report``)."""
