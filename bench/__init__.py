"""CardSense benchmark suite: batch scoring, ``/classify`` and training, each against a notebook-style
baseline run in the same invocation on the same data.

    python -m bench [--quick] [--only batch,serve,train] [--out docs/BENCHMARKS.md]

See ``docs/BENCHMARKS.md`` for the latest table and how to read it.
"""
