"""One place for each fact: every default of a federated run lives in FederationConfig, and the command
line, the experiment and the deployment run config read it from there; the client side never imports the
server side; the round loop is made of small functions."""

import ast
import dataclasses
import inspect
import tomllib
from pathlib import Path

from fedids.federation.config import RUN_ONLY_KEYS, FederationConfig
from support import paths

ROOT = paths.REPO
FEDERATION = ROOT / "src" / "fedids" / "federation"
DEFAULTS = FederationConfig()
# `fedids federate` option -> FederationConfig field, where the names differ.
CLI_NAMES = {
    "fraction": "fraction_train",
    "dpsgd_noise": "dpsgd_noise_multiplier",
    "dpsgd_epsilon": "dpsgd_target_epsilon",
    "dpsgd_clip": "dpsgd_clip_norm",
    "energy_budget": "energy_budget_j",
}
CLI_ONLY_OPTIONS = CLI_ONLY = {
    "data",
    "out_dir",
    "clients",
    "partition",
    "mode",
    "split",
    "test_fraction",
    "segment",
    "keys",
    "resume",
    "test_data",
    "malicious",
    "attack",
}


def test_the_deployment_run_config_lists_every_setting_at_its_default():
    config = tomllib.loads((ROOT / "deploy" / "flower-app" / "pyproject.toml").read_text())["tool"]["flwr"][
        "app"
    ]["config"]
    fields = {
        f.name.replace("_", "-"): getattr(DEFAULTS, f.name) for f in dataclasses.fields(FederationConfig)
    }
    assert set(config) == set(fields) | set(RUN_ONLY_KEYS)
    drifted = {k: (config[k], v) for k, v in fields.items() if config[k] != v}
    assert not drifted, f"run config differs from FederationConfig: {drifted}"
    FederationConfig.from_run_config(config)  # and it is a valid configuration


def test_every_federate_option_defaults_to_federation_config():
    from fedids.cli.federate import CLI_ONLY, OPTION_FIELDS, federate, federation_config

    assert OPTION_FIELDS == CLI_NAMES and set(CLI_ONLY) == CLI_ONLY_OPTIONS
    options = {}
    for name, p in inspect.signature(federate).parameters.items():
        options[name] = getattr(p.default, "default", p.default)  # typer.Option(...) or an Annotated default
    unknown = (
        set(options) - CLI_ONLY - {f.name for f in dataclasses.fields(FederationConfig)} - set(CLI_NAMES)
    )
    assert not unknown, f"options with no FederationConfig field: {unknown}"
    drifted = {
        name: (value, getattr(DEFAULTS, CLI_NAMES.get(name, name)))
        for name, value in options.items()
        if name not in CLI_ONLY and value != getattr(DEFAULTS, CLI_NAMES.get(name, name))
    }
    assert not drifted, f"CLI defaults differ from FederationConfig: {drifted}"
    # The pipeline's config is built from the options alone: at their defaults it is FederationConfig's.
    built = federation_config(options | {"out_dir": "run", "keys": None})
    assert built == dataclasses.replace(DEFAULTS, min_clients=1)


def test_the_experiment_trains_with_the_federation_defaults():
    from fedids.pipelines.experiment import ExperimentConfig

    experiment = ExperimentConfig(out_dir=Path("x"))
    for name in ("rounds", "local_epochs", "batch_size", "lr", "hidden", "window"):
        assert getattr(experiment, name) == getattr(DEFAULTS, name), name


def _federation_imports(path: Path) -> set[str]:
    """fedids.federation modules ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "fedids.federation":
                found |= {alias.name for alias in node.names}
            elif node.module.startswith("fedids.federation."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("fedids.federation.")}
    return found


def test_the_client_side_imports_nothing_from_the_server_side():
    server_side = {
        "server_app",
        "rounds",
        "plain",
        "finish",
        "secure_rounds",
        "state",
        "strategies",
        "simulation",
        "deployment",
        "baselines",
    }
    seen, todo = set(), ["client_app"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [
            n for n in _federation_imports(FEDERATION / f"{name}.py") if (FEDERATION / f"{n}.py").exists()
        ]
    assert not seen & server_side, f"the client reaches {seen & server_side}"


def test_no_function_of_the_round_loop_exceeds_80_lines():
    for name in (
        "rounds",
        "plain",
        "finish",
        "secure_rounds",
        "aggregation",
        "client",
        "client_app",
        "server_app",
        "setup",
        "state",
        "config",
        "private",
        "messages",
        "calibration",
    ):
        tree = ast.parse((FEDERATION / f"{name}.py").read_text())
        long = [
            (n.name, n.end_lineno - n.lineno + 1)
            for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80
        ]
        assert not long, f"{name}.py: {long}"
