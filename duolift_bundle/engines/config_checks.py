"""Checks that run in a training config's ``initialize`` step, before any data or model is built.

A typo in a command-line override (``--vews 1``) would otherwise add a new, unused id to a MONAI
config and train the wrong model silently; an impossible value (``--views 3``, a size that the
U-Net++ cannot pool four times) would fail much later, deep inside a forward pass.
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Optional, Sequence, Sized

from duolift_bundle.constants import view_names
from duolift_bundle.datasets.routes import DATA_COMMANDS
from duolift_bundle.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["check_training_settings", "check_overrides", "check_datasets", "check_evaluation_set"]


@functools.lru_cache(maxsize=1)
def _run_args() -> frozenset[str]:
    """The named arguments of MONAI's bundle commands (``run``, ``ConfigWorkflow``,
    ``verify_net_in_out``, ``ckpt_export``): command-line keys that are not config ids. Read from
    their signatures, plus ``workflow_name``, which ``run`` takes out of its ``**override``."""
    import inspect

    from monai.bundle import ConfigWorkflow, scripts

    named = {"workflow_name"}
    for command in (scripts.run, ConfigWorkflow.__init__, scripts.verify_net_in_out, scripts.ckpt_export):
        for param in inspect.signature(command).parameters.values():
            if param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL) and param.name != "self":
                named.add(param.name)
    return frozenset(named)


def check_training_settings(
    views: int,
    size: int,
    width: float = 1.0,
    batch_size: int = 1,
    accumulation_steps: int = 1,
    max_epochs: int = 1,
    val_interval: int = 1,
    lr: Sequence[float] = (),
    data_format: str = "prepared",
) -> bool:
    """Raise :class:`ConfigError` naming the key and the allowed values; True when all is well."""
    problems = []
    try:
        view_names(views)
    except ConfigError as err:
        problems.append(f"views = {views!r}: {err}")
    if not isinstance(size, int) or size <= 0 or size % 16:
        problems.append(f"size = {size!r}: must be a positive multiple of 16 (U-Net++ pools four times)")
    if not width > 0:
        problems.append(f"width = {width!r}: must be > 0")
    for name, value in (
        ("batch_size", batch_size),
        ("accumulation_steps", accumulation_steps),
        ("max_epochs", max_epochs),
        ("val_interval", val_interval),
    ):
        if not isinstance(value, int) or value < 1:
            problems.append(f"{name} = {value!r}: must be an integer >= 1")
    for value in lr:
        if not value > 0:
            problems.append(f"learning rate {value!r}: must be > 0")
    if data_format not in ("prepared", "raw", "x2ct"):  # the routes of duolift_bundle.datasets.routes.make_dataset
        problems.append(
            f"data_format = {data_format!r}: must be 'prepared' (datalist.json), 'raw' (CT files) or 'x2ct' (X2CT-GAN HDF5 folders)"
        )
    if problems:
        raise ConfigError("invalid training config:\n  " + "\n  ".join(problems))
    return True


def _override_keys(argv: Sequence[str]) -> list[str]:
    keys = []
    for token in argv:
        if token.startswith("--") and len(token) > 2:
            keys.append(token[2:].split("=", 1)[0])
    return keys


def _config_files_from_argv(argv: Sequence[str]) -> list[str]:
    """The value of ``--config_file`` (one path, or a ``"['a.yaml','b.yaml']"`` list)."""
    value = ""
    for i, token in enumerate(argv):
        if token.startswith("--config_file"):
            value = token.split("=", 1)[1] if "=" in token else (argv[i + 1] if i + 1 < len(argv) else "")
    text = value.strip()
    if not text:
        return []
    if text.startswith("["):
        return [s.strip(" '\"") for s in text.strip("[]").split(",") if s.strip(" '\"")]
    return [text]


def check_overrides(config_files: Optional[Sequence[str]] = None, argv: Optional[Sequence[str]] = None) -> bool:
    """Raise :class:`ConfigError` if a ``--key value`` override names an id that no config defines
    (MONAI's ``run`` would add it to the config silently, so it is checked here on ``sys.argv``).

    Args:
        config_files: the config files of the run; default: the ``--config_file`` of ``argv``.
        argv: the command line; default ``sys.argv`` (only checked when it is a ``monai.bundle``
            command, so configs driven from Python are not affected).
    """
    from monai.bundle import ConfigParser

    if argv is None:
        argv = sys.argv
        if not argv or "monai" not in argv[0].replace("\\", "/").split("/"):
            return True
    argv = list(argv)
    if config_files is None:
        config_files = _config_files_from_argv(argv)
    known = set(ConfigParser.load_config_files(list(config_files)).keys()) if config_files else set()
    unknown = [k for k in _override_keys(argv) if k not in _run_args() and k.split("#", 1)[0] not in known]
    if unknown and known:
        raise ConfigError(
            f"unknown config key(s) {', '.join('--' + k for k in unknown)} for {', '.join(config_files)}; "
            f"known top-level ids: {', '.join(sorted(k for k in known if not k.startswith('_')))}"
        )
    return True


def check_datasets(train: Sized, validation: Optional[Sized], source: str) -> bool:
    """Stop a run that would train nothing (an empty training split) before the first iteration,
    naming the data source, the counts of both splits and the commands that make data. An empty
    validation split is allowed (the run then keeps its last epoch's weights,
    :class:`~duolift_bundle.engines.handlers.FinalModelSaver`) and said in the log.

    Args:
        train, validation: the built datasets (``len`` is all that is asked of them).
        source: what they were read from (the datalist, the raw folder, the X2CT root).
    """
    n_train = len(train)
    n_val = len(validation) if validation is not None else 0
    counts = f"training {n_train}, validation {n_val}"
    if n_train == 0:
        raise ConfigError(
            f"{source}: the training split is empty ({counts}); nothing to train. Make data: {DATA_COMMANDS}"
        )
    if n_val == 0:
        logger.warning("%s: the validation split is empty (%s): the last epoch's weights will be kept", source, counts)
    return True


def check_evaluation_set(dataset: Sized, source: str, split: str) -> bool:
    """Stop an evaluation that would score nothing (the chosen split holds no case) before it
    starts, naming the data source and the split; MONAI's evaluator would skip the run and exit 0."""
    if len(dataset) == 0:
        raise ConfigError(
            f"{source}: the {split!r} split holds no case; nothing to evaluate. --split all evaluates every "
            "case (or --split training / validation)"
        )
    return True
