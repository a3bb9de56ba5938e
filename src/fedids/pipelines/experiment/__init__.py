"""``fedids experiment paper``: the grid behind the paper's section 4, measured by this project.

One call runs, on one data set (the user's CSV files, or the embedded synthetic IoT default):

1. the baselines: ``centralized`` (one model on the pooled training rows of the participating clients)
   and ``local`` (each client alone, mean and worst client);
2. federated training for each privacy mode of :data:`DEFAULT_MODES` the installed
   federated training supports (others are recorded as
   ``"not run: <reason>"``), DP modes calibrated to ``target_epsilon``;
3. a ``shared:0.5`` federated run (the paper's "50% shared classes") for the average F1;
4. per-family one-vs-rest metrics and the confusion matrix of the best federated model (highest final
   test macro-F1; chosen on the test split, so slightly optimistic);
5. model sizes (ONNX float, int8, pruned, pruned int8; pruning without fine-tune) and batch-1 latency
   of the best model, the plaintext and CKKS-encrypted update size;
6. energy and communication from the federated histories (device and radio profiles of
   :mod:`fedids.devices`), to a target macro-F1;
7. membership inference (:mod:`fedids.evaluation.mia`) against the model without DP and every DP
   model;
8. scalability figures, copied from ``benchmarks/results/scalability.json`` (relative to the working
   directory) when it exists;
9. the adaptive learning strategies (``adaptive``, unless ``ExperimentConfig.adaptive`` is off): plain
   FedAvg against energy-aware selection with adaptive local epochs under a per-device energy budget,
   int8 and top-k update compression, on the same partition and seed, compared on joules and MB to the
   same target macro-F1 (:mod:`fedids.pipelines.experiment.adaptive`);
10. the privacy table (:mod:`.privacy_table`): per mode, the accountant's epsilon and against whom it
    holds, the canary audit's lower bound from the ``fedids audit`` reports given (``audits``), macro-F1,
    MCC and the commands.

Membership needs non-members from the same population as the members, so before partitioning, an iid
sample of the training rows' host segments (one share in ``clients + 1``) is *withheld*
(:func:`~fedids.pipelines.experiment.membership.split_withheld`): no baseline, privacy mode or ``shared:0.5`` run trains on it, and it serves as
the non-member pool. Every section of ``results.json`` records the command line
and seed that produced it. ``results.json`` is rewritten after each section, so an interrupted run keeps
what it finished; ``report.html`` is rendered at the end.

Modules: :mod:`.config` (settings, privacy modes), :mod:`.run` (the list of sections and the runner),
:mod:`.federated` (data, baselines, one federated run per mode), :mod:`.model_sections`,
:mod:`.rare_section`, :mod:`.costs`, :mod:`.adaptive`, :mod:`.membership`, :mod:`.privacy_table` (the sections'
measurements), :mod:`.results` (JSON and summary).
"""

from fedids.pipelines.experiment.adaptive import (
    ADAPTIVE_RUNS,
    adaptive_budget_j,
    adaptive_section,
    adaptive_settings,
    summarise_adaptive,
)
from fedids.pipelines.experiment.config import (
    DEFAULT_MODES,
    DEFAULT_SCALABILITY,
    REPORT_FILE,
    RESULTS_FILE,
    SUMMARY_KEYS,
    TARGET_FRACTION,
    ExperimentConfig,
    dp_against,
    dp_unit,
    federation_config,
    is_distributed,
    make_command,
    privacy_unsupported_reason,
    quick_synth,
    split_mode,
)
from fedids.pipelines.experiment.costs import energy_sections, load_scalability
from fedids.pipelines.experiment.federated import load_frame, run_federated
from fedids.pipelines.experiment.membership import mia_section, split_withheld
from fedids.pipelines.experiment.model_sections import (
    per_family_section,
    size_and_latency_sections,
    update_bytes_section,
)
from fedids.pipelines.experiment.privacy_table import load_audit, privacy_section
from fedids.pipelines.experiment.rare_section import rare_section
from fedids.pipelines.experiment.results import clean_results, make_meta, section, summary_lines
from fedids.pipelines.experiment.run import SECTIONS, Context, Section, run_experiment

__all__ = [
    "ADAPTIVE_RUNS",
    "DEFAULT_MODES",
    "DEFAULT_SCALABILITY",
    "REPORT_FILE",
    "RESULTS_FILE",
    "SECTIONS",
    "SUMMARY_KEYS",
    "TARGET_FRACTION",
    "Context",
    "ExperimentConfig",
    "Section",
    "adaptive_budget_j",
    "adaptive_section",
    "adaptive_settings",
    "clean_results",
    "dp_against",
    "dp_unit",
    "energy_sections",
    "federation_config",
    "is_distributed",
    "load_audit",
    "load_frame",
    "load_scalability",
    "make_command",
    "make_meta",
    "mia_section",
    "per_family_section",
    "privacy_section",
    "privacy_unsupported_reason",
    "quick_synth",
    "rare_section",
    "run_experiment",
    "run_federated",
    "section",
    "size_and_latency_sections",
    "split_mode",
    "split_withheld",
    "summarise_adaptive",
    "summary_lines",
    "update_bytes_section",
]
