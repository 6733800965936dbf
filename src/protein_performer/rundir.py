"""Files on disk: the run directory, and the one way each of its files is written and read.

Everything that reads or writes a model or a training run asks :class:`RunDir` for its paths, so a
file's name is spelled once, here. Layout of a run directory ``DIR``::

    DIR/config.json, DIR/model.safetensors   the model (what :func:`protein_performer.load` reads)
    DIR/train_config.json                    the training settings (a run, not a bare model)
    DIR/frequencies.json                     the training split's token frequencies (the baseline)
    DIR/metrics.jsonl, training_curves.png   the training log and its plot; DIR/tensorboard/
    DIR/checkpoints/step-0000100/            a complete checkpoint: the model files, the training
                                             settings and the trainer state (trainer_state.*); with
                                             FSDP also sharded/: model and optimizer state written
                                             by every rank (torch.distributed.checkpoint)
    DIR/checkpoints/latest                   the name of the newest complete checkpoint

Why every write goes through :func:`atomic_write`: a file is written under a temporary name, flushed
to disk and renamed over the old one (``os.replace``), so a ``kill -9`` at any moment leaves either the
old file or the new one, never half of one. A checkpoint is a folder written the same way, and only
then does ``latest`` move. Tensors are safetensors (never pickled: loading cannot run code).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .model import PerformerConfig, PerformerLM

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TRAIN_CONFIG = "train_config.json"
FREQUENCIES = "frequencies.json"
METRICS = "metrics.jsonl"
DISTILLATION = "distillation.jsonl"  # how a converted model was distilled (convert --distill)
CURVES = "training_curves.png"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE_TENSORS, STATE_JSON = "trainer_state.safetensors", "trainer_state.json"
SHARDED = "sharded"  # a checkpoint's torch.distributed.checkpoint folder (FSDP runs)
LOCK = ".protein-performer.lock"  # held (flock) by the one process writing the directory
# What a model carries beyond its weights: what evaluate needs to score it as its run did.
COMPANIONS = (TRAIN_CONFIG, FREQUENCIES)
KEEP_CHECKPOINTS = 2
# The LM head shares the token embedding's tensor: safetensors refuses shared storage, and loading re-ties it.
TIED = "lm_head.embedding.weight"
# Rotary frequencies are saved since conversions keep a source's own; checkpoints written before load
# with the standard ones, which they were trained with.
ROTARY_FREQUENCIES = "rotary.inv_freq"


# ---- one atomic write ------------------------------------------------------------------------------
def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (renames into it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, content: str | bytes | Callable[[Path], None]) -> Path:
    """Write ``path`` all at once: text, bytes, or ``content(tmp)`` writing a temporary file (keeping
    ``path``'s suffix, so that writers that go by it, such as matplotlib, write the right format).
    The file gets the permissions of any file the user creates (0666 less the umask), whatever the
    writer chose (safetensors writes 0600)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        if callable(content):
            content(tmp)
        else:
            with open(tmp, "w" if isinstance(content, str) else "wb") as f:
                f.write(content)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when something above failed
    return path


def write_json(path: str | os.PathLike, value: dict | list) -> Path:
    return atomic_write(path, json.dumps(value, indent=2) + "\n")


def output_file(path: str | os.PathLike, *, overwrite: bool = False, ours: Callable[[Path], bool] | None = None,
                inputs: tuple[str | os.PathLike | None, ...] = ()) -> Path:
    """A file to write, checked before any work: not a folder, not one of the command's ``inputs``
    (files, or folders whose files it reads), writable (its folder is created), and not an existing
    file unless ``overwrite`` or ``ours(path)`` says this program wrote it (a file of the user's is
    never replaced without being asked)."""
    path = Path(path)
    for source in (Path(s).resolve() for s in inputs if s is not None):
        if path.resolve() == source or (source.is_dir() and path.resolve().parent == source):
            raise ValueError(f"`out` {path} is {'in ' if source.is_dir() else ''}one of this command's inputs ({source}): "
                             f"write elsewhere")
    if path.is_dir():
        raise IsADirectoryError(f"`out` {path} is a folder: give the file to write")
    if path.exists() and not overwrite and not (ours is not None and ours(path)):
        raise FileExistsError(f"`out` {path} already exists and was not written by protein-performer: "
                              f"choose another `out`, or pass `overwrite` to replace it")
    probe = path.with_name(f".{path.name}.probe")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise OSError(f"`out` {path} cannot be written ({err.strerror or err})") from None
    return path


# ---- readers with one-line errors --------------------------------------------------------------------
def read_json_object(path: str | os.PathLike, text: str | None = None) -> dict:
    """The JSON object in ``path`` (or in ``text``, one line of it); ``ValueError`` naming the file."""
    path = Path(path)
    try:
        value = json.loads(path.read_text() if text is None else text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds {type(value).__name__}, not a JSON object")
    return value


def read_safetensors(path: str | os.PathLike) -> dict[str, Tensor]:
    """All tensors of one safetensors file; ``FileNotFoundError`` / ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        with open(path, "rb"):  # an unreadable file is not a damaged one
            pass
    except OSError as err:
        raise OSError(f"{path} cannot be read ({err.strerror or err})") from None
    try:
        return load_file(str(path))
    except Exception as err:  # SafetensorError: a damaged or truncated file
        raise ValueError(f"{path} is not a readable safetensors file ({err}): it is corrupt or incomplete") from None


def write_safetensors(path: str | os.PathLike, tensors: dict[str, Tensor]) -> Path:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


# ---- the run directory -----------------------------------------------------------------------------
class RunDir:
    """A model or training-run directory (also each checkpoint folder inside one): names its files,
    reads and writes them. ``RunDir(path)`` touches nothing on disk."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    config = property(lambda self: self.path / CONFIG)
    weights = property(lambda self: self.path / WEIGHTS)
    train_config = property(lambda self: self.path / TRAIN_CONFIG)
    frequencies = property(lambda self: self.path / FREQUENCIES)
    metrics = property(lambda self: self.path / METRICS)
    distillation = property(lambda self: self.path / DISTILLATION)
    curves = property(lambda self: self.path / CURVES)
    tensorboard = property(lambda self: self.path / TENSORBOARD)
    checkpoints = property(lambda self: self.path / CHECKPOINTS)
    state_tensors = property(lambda self: self.path / STATE_TENSORS)
    state_json = property(lambda self: self.path / STATE_JSON)
    sharded = property(lambda self: self.path / SHARDED)

    # -- one writer at a time ------------------------------------------------------------------------
    def lock(self) -> RunLock:
        """Take the directory for this process (creating it): ``ValueError`` naming the process that
        holds it. Held until :meth:`RunLock.release` or the process ends, however it ends (the kernel
        drops the lock of a dead process, so a ``kill -9`` never leaves a stale one)."""
        return RunLock(self.path)

    def user_files(self) -> list[Path]:
        """What the directory holds besides the lock file."""
        return [p for p in self.path.iterdir() if p.name != LOCK] if self.path.is_dir() else []

    # -- what is there ---------------------------------------------------------------------------------
    def has_model(self) -> bool:
        return self.config.is_file() and self.weights.is_file()

    def is_run(self) -> bool:
        """A training run (its settings are recorded), possibly without a checkpoint yet."""
        return self.train_config.is_file()

    def latest_checkpoint(self) -> RunDir | None:
        """The newest complete checkpoint, or None."""
        pointer = self.checkpoints / LATEST
        if not pointer.exists():
            return None
        checkpoint = RunDir(self.checkpoints / pointer.read_text().strip())
        return checkpoint if checkpoint.state_json.exists() else None

    # -- model ---------------------------------------------------------------------------------------
    def read_config(self) -> PerformerConfig:
        """``config.json``; ``FileNotFoundError`` / ``ValueError`` naming the file."""
        return PerformerConfig.load(self.config)

    def write_model(self, tensors: dict[str, Tensor], config: PerformerConfig) -> None:
        """``config.json`` and ``model.safetensors`` from a state dict (e.g. one consolidated from
        shards), each replaced atomically."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_config(config)
        write_safetensors(self.weights, {k: v for k, v in tensors.items() if k != TIED})
        fsync_dir(self.path)

    def write_config(self, config: PerformerConfig) -> None:
        write_json(self.config, config.to_dict())

    def load_weights(self, model: nn.Module) -> None:
        """``model.safetensors`` into ``model``; ``ValueError`` when names or shapes differ."""
        tensors = read_safetensors(self.weights)
        expected = model.state_dict()
        wrong = [f"{k} is {tuple(v.shape)}, the model's {tuple(expected[k].shape)}"
                 for k, v in tensors.items() if k in expected and v.shape != expected[k].shape]
        if wrong:
            raise ValueError(f"{self.weights} does not match the model's config: {wrong[0]}"
                             + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""))
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        missing = [k for k in missing if k not in (TIED, ROTARY_FREQUENCIES)]
        if missing or unexpected:
            raise ValueError(f"{self.weights} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}")

    def load_model(self) -> PerformerLM:
        """The model in eval mode; ``FileNotFoundError`` / ``ValueError`` name the file and the fix."""
        if self.path.is_file():
            raise NotADirectoryError(f"{self.path} is a file: give the model directory (the folder holding config.json)")
        for path in (self.config, self.weights):
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found: give a model directory written by `protein-performer train` "
                                        f"or `convert` (config.json + model.safetensors)")
        model = PerformerLM(self.read_config())
        self.load_weights(model)
        return model.eval()

    # -- training records ----------------------------------------------------------------------------
    def read_train_config(self) -> dict | None:
        return read_json_object(self.train_config) if self.train_config.exists() else None

    def write_train_config(self, values: dict) -> None:
        write_json(self.train_config, values)

    def read_frequencies(self, vocab_size: int | None = None) -> list[float] | None:
        """The training split's token frequencies ``[V]``, or None; ``ValueError`` naming the file
        when they are not ``vocab_size`` non-negative numbers with a positive sum."""
        if not self.frequencies.exists():
            return None
        values = read_json_object(self.frequencies).get("frequencies")
        ok = (isinstance(values, list) and all(isinstance(v, (int, float)) and 0 <= v < float("inf") for v in values)
              and sum(values) > 0 and (vocab_size is None or len(values) == vocab_size))
        if not ok:
            expected = f"{vocab_size} " if vocab_size is not None else ""
            raise ValueError(f"{self.frequencies} is not a valid frequency table (expected {{\"frequencies\": [{expected}"
                             f"non-negative numbers]}}): delete it to recompute it from the training data")
        return values

    def write_frequencies(self, frequencies: list[float]) -> None:
        write_json(self.frequencies, {"frequencies": frequencies})

    def read_metrics(self) -> list[dict]:
        """The training log, one record per logged step; ``ValueError`` naming file and line."""
        if not self.metrics.exists():
            return []
        history = []
        for number, line in enumerate(self.metrics.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{self.metrics}, line {number}: not valid JSON ({err.msg} at column {err.colno}): "
                                     f"the file is truncated or damaged") from None
                if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                    raise ValueError(f"{self.metrics}, line {number}: no step number: not a metrics log of `protein-performer train`")
                history.append(record)
        return history

    def write_metrics(self, history: list[dict], *, distillation: bool = False) -> None:
        """Rewritten whole, so that a resumed run never shows a step twice; ``distillation``: the
        history of ``convert --distill`` instead of training's."""
        atomic_write(self.distillation if distillation else self.metrics, "".join(json.dumps(r) + "\n" for r in history))

    def copy_companions(self, source: RunDir) -> None:
        """The files beyond the weights that ``source`` has (training settings, frequencies)."""
        for name in COMPANIONS:
            if (source / name).is_file():
                shutil.copyfile(source / name, self / name)

    # -- checkpoints ---------------------------------------------------------------------------------
    def staged_checkpoint(self, step: int, *, fresh: bool) -> RunDir:
        """The temporary folder a checkpoint of ``step`` is written into before it is renamed into
        place; ``fresh`` empties it first (the process that stages it, before others write shards)."""
        tmp = RunDir(self.checkpoints / f".step-{step:07d}.tmp")
        if fresh:
            shutil.rmtree(tmp.path, ignore_errors=True)
            tmp.path.mkdir(parents=True)
        return tmp

    def write_checkpoint(self, step: int, *, config: PerformerConfig, weights: dict[str, Tensor],
                         state_tensors: dict[str, Tensor], state: dict, train_config: dict, staged: bool = False,
                         keep_every: int = 0) -> RunDir:
        """A complete checkpoint for ``step``: written into a temporary folder, renamed into place, then
        ``latest`` moved; the run directory itself then holds the newest weights. Older checkpoints
        beyond the last two are removed, except those of steps that are multiples of ``keep_every``
        (when it is not 0: models along the run, e.g. to measure them against steps). ``staged``: the folder (:meth:`staged_checkpoint`) already
        holds what other processes wrote into it (the shards), and is completed, not emptied."""
        root = self.checkpoints
        root.mkdir(parents=True, exist_ok=True)
        name = f"step-{step:07d}"
        tmp = self.staged_checkpoint(step, fresh=not staged)
        tmp.write_model(weights, config)
        write_safetensors(tmp.state_tensors, state_tensors)
        atomic_write(tmp.state_json, json.dumps(state, indent=1) + "\n")
        tmp.write_train_config(train_config)
        fsync_dir(tmp.path)
        final = root / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp.path, final)
        fsync_dir(root)
        atomic_write(root / LATEST, name + "\n")
        fsync_dir(root)
        self.write_model(weights, config)
        complete = sorted(p for p in root.glob("step-*") if p.is_dir())
        for old in complete[:-KEEP_CHECKPOINTS]:
            if not (keep_every and int(old.name.removeprefix("step-")) % keep_every == 0):
                shutil.rmtree(old, ignore_errors=True)
        return RunDir(final)

    def read_state(self) -> tuple[dict[str, Tensor], dict]:
        """A checkpoint's trainer state: its tensors and its JSON part."""
        return read_safetensors(self.state_tensors), read_json_object(self.state_json)


class RunLock:
    """An exclusive ``flock`` on ``DIR/.protein-performer.lock``, which also records the holder's pid."""

    def __init__(self, directory: Path):
        self._fd: int | None = None
        if directory.exists() and not directory.is_dir():
            raise NotADirectoryError(f"`out` {directory} is a file: give a directory")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise OSError(f"`out` {directory} cannot be written ({err.strerror or err})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ValueError(f"{directory} is in use by process {holder}: wait for it to finish, or choose another `out`") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd, self.directory = fd, directory

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __del__(self) -> None:
        self.release()


def load_model(path: str | os.PathLike) -> PerformerLM:
    """A model directory (``config.json`` + ``model.safetensors``) → :class:`PerformerLM` in eval mode."""
    return RunDir(path).load_model()


def save_model(model: nn.Module, config: PerformerConfig, path: str | os.PathLike) -> None:
    """``model``'s weights and ``config`` into ``path`` (created), each file replaced atomically."""
    RunDir(path).write_model(model.state_dict(), config)


__all__ = ["RunDir", "RunLock", "atomic_write", "load_model", "output_file", "read_json_object", "read_safetensors", "save_model", "write_json",
           "write_safetensors"]
