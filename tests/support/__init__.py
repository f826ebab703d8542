"""Code the tests and the pipeline benchmark run, never the product: the scripted
evaluator and the consumer launcher that uses it."""
