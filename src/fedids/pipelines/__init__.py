"""Pipelines: the coordination between the command line and the packages, callable from Python.

Each pipeline strings library calls together and returns a typed result; the CLI modules only parse
arguments and print. Layers, top to bottom (``tests/test_layout.py`` checks them)::

    cli/ -> pipelines/ -> federation/, evaluation/ -> privacy/, detect/, task.py -> model/ -> data/

* :mod:`fedids.pipelines.federate`: baselines plus a federated run (``fedids federate``, the experiment,
  the demo);
* :mod:`fedids.pipelines.detect`: the streaming detection loop (``fedids detect``, the demo);
* :mod:`fedids.pipelines.experiment`: the paper's evaluation as a list of sections (``fedids experiment
  paper``, the demo), rendered by :mod:`fedids.evaluation.report`.
"""
