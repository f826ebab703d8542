"""`hpcq evaluate`: models (not single kernels) measured on a problem suite: the
`suites`, the `run` that samples and judges, the `stats` (pass@k, fast_p, paired
differences) and the `report`."""
