"""What every command shares: the help layout, ``--threads``, ``--device``, ``--quiet`` and when to show progress."""

from __future__ import annotations

import argparse
import sys


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's help ends with its default, unless the help says it already or there is none to
    say (a flag, a required option, a default of None that the help explains); epilogs (the examples)
    keep their lines."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if "default" in help_text or any(action.default is nothing for nothing in (None, False, argparse.SUPPRESS)) or action.required:
            return help_text
        return super()._get_help_string(action)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def thread_count(text: str) -> int:
    """1 to 4 threads per core: PyTorch crashes on absurd counts, and more than that only oversubscribes."""
    import os

    value, limit = positive_int(text), 4 * (os.cpu_count() or 1)
    if value > limit:
        raise argparse.ArgumentTypeError(f"{value} threads on {os.cpu_count()} cores: give 1 to {limit}")
    return value


def add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=thread_count, metavar="N",
                        help="CPU threads for PyTorch's operations (torch.set_num_threads; default: PyTorch's, one per "
                             "core; on a busy machine fewer avoid oversubscription)")


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="where the model runs: cpu, cuda or cuda:N (default: cuda when available, else cpu)")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--threads`` and ``--quiet``: what every command that runs a saved model takes."""
    add_device(parser)
    add_threads(parser)
    add_quiet(parser)


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bar (it is off anyway when stderr is not a terminal)")


def show_progress(args: argparse.Namespace) -> bool:
    """A progress bar on stderr: only for a person watching (a terminal), never with ``--quiet``."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def set_threads(args: argparse.Namespace) -> None:
    threads = getattr(args, "threads", None)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def attention_name(config: dict) -> str:
    """How the attention of a model ``config`` (a ``PerformerConfig`` as a dict) is announced, e.g.
    "exact softmax attention" or "FAVOR attention (softmax kernel, M = 64)"."""
    names = {
        "favor": "FAVOR attention ({kernel} kernel, M = {num_features})",
        "softmax": "exact softmax attention",
        "local": "local attention (exact softmax within {window} positions)",
        "linear": "linear attention (elu + 1 features)",
        "reformer": "Reformer LSH attention ({n_hashes} hashes, buckets of {bucket_size})",
        "linformer": "Linformer attention (k = {linformer_k}, max_len {max_len})",
        "none": "no attention (the no-context control)",
    }
    return names[config["attention"]].format(**config)
