"""`mineral3d run`: register -> train -> segment -> particles -> grades -> measure -> kernel -> validate -> report.

Each step writes its outputs atomically and then a record ``OUT/.steps/<step>.json``
holding a key: a hash of the step's settings, the keys of the steps it depends on and
the fingerprints (size, modification time) of the input files it reads. A rerun skips a
step whose record holds the same key and whose outputs exist; an interrupted step is
redone (training resumes from its checkpoint, segmentation from its last finished block).
Timings go to ``OUT/run.json``; ``summary.json`` holds only results, so an interrupted
and resumed run writes the same ``summary.json`` as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mineral3d.errors import InputError, OutOfMemory
from mineral3d.io.atomic import read_json, write_json
from mineral3d.io.layout import RunLayout
from mineral3d.io.sample import Sample, open_sample


@dataclass(frozen=True)
class RegisterSettings:
    orientation: str = "near-z"
    min_score: float = 0.75
    min_ratio: float = 2.0
    min_anchors: int = 3
    min_overlap: float = 0.75


@dataclass(frozen=True)
class TrainSettings:
    iterations: int = 1200
    features: tuple[int, ...] = (8, 8, 16, 32, 64, 8)
    calibrate: bool = True
    precision: str = "auto"
    class_weight: float = 0.75


@dataclass(frozen=True)
class SegmentSettings:
    block: tuple[int, int, int] = (128, 256, 256)
    precision: str = "auto"
    allow_resample: bool = False
    tta: str = "none"
    """Test-time mirroring of the phase network (:class:`mineral3d.nn.infer.InferConfig`): none, flips, all-flips."""

    def __post_init__(self):
        from mineral3d.nn.infer import check_tta

        check_tta(self.tta, "config", "segment.tta")


@dataclass(frozen=True)
class ParticleSettings:
    min_diameter_um: float | None = None
    neck_ratio: float = 0.7


@dataclass(frozen=True)
class MeasureSettings:
    section_step: int | None = None
    size_edges_um: tuple[float, ...] | None = None
    n_boot: int = 1000


@dataclass(frozen=True)
class CorrectSettings:
    """Fine-tuning on the user's painted corrections (``run --corrections``; ignored without it)."""

    iterations: int = 300
    learning_rate: float = 1e-3
    weight: float = 2.0


@dataclass(frozen=True)
class KernelSettings:
    """The 2D -> 3D kernel of this run's 3D result, and the correction of its own SEM maps."""

    n_directions: int = 32
    n_boot: int = 500


@dataclass(frozen=True)
class RunConfig:
    """Every setting of ``mineral3d run`` (print them with ``mineral3d config --defaults``)."""

    seed: int = 0
    device: str = "auto"
    register: RegisterSettings = field(default_factory=RegisterSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    segment: SegmentSettings = field(default_factory=SegmentSettings)
    particles: ParticleSettings = field(default_factory=ParticleSettings)
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    kernel: KernelSettings = field(default_factory=KernelSettings)
    correct: CorrectSettings = field(default_factory=CorrectSettings)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "config") -> RunConfig:
        """Validate ``data`` (a nested dict, as written by :meth:`to_dict`); unknown keys are errors."""
        if not isinstance(data, dict):
            raise InputError(source, "the config must be a JSON object")
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            v = data[f.name]
            if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
                kw[f.name] = _section(f.default_factory, v, f"{source}: {f.name}")
            else:
                kw[f.name] = _value(f.name, v, getattr(cls(), f.name), source)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InputError(source, f"unknown setting(s) {', '.join(sorted(unknown))}")
        return cls(**kw)


def _value(name: str, v, default, source: str):
    if default is None or v is None:
        return tuple(v) if isinstance(v, list) else v
    if isinstance(default, bool):
        if not isinstance(v, bool):
            raise InputError(source, f"{name} must be true or false, got {v!r}")
        return v
    if isinstance(default, tuple):
        if not isinstance(v, list) or len(v) != len(default):
            raise InputError(source, f"{name} must be a list of {len(default)} numbers, got {v!r}")
        return tuple(v)
    if isinstance(default, (int, float)) and not isinstance(v, (int, float)) or isinstance(v, bool):
        raise InputError(source, f"{name} must be a number, got {v!r}")
    if isinstance(default, str) and not isinstance(v, str):
        raise InputError(source, f"{name} must be a string, got {v!r}")
    return type(default)(v)


def _section(cls, data, source: str):
    if not isinstance(data, dict):
        raise InputError(source, "must be an object")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise InputError(source, f"unknown setting(s) {', '.join(sorted(unknown))}")
    base = cls()
    return cls(**{k: _value(k, v, getattr(base, k), source) for k, v in data.items()})


def load_config(path: str | os.PathLike | None) -> RunConfig:
    """Defaults, overridden by a JSON file (same layout as ``mineral3d config --defaults``)."""
    if path is None:
        return RunConfig()
    return RunConfig.from_dict(read_json(path), source=str(path))


# --- steps ------------------------------------------------------------------------------------

def _fingerprint(paths) -> list:
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(_fingerprint(sorted(x for x in p.rglob("*") if x.is_file() and ".partial" not in str(x))))
        elif p.exists():
            st = p.stat()
            out.append([str(p), st.st_size, st.st_mtime_ns])
    return out


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


@dataclass
class RunContext:
    sample: Sample
    out: Path
    config: RunConfig
    model_dir: Path | None = None
    progress: Callable[[str, int, int], None] | None = None
    log: Callable[[str], None] = print
    keys: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    scheduler: object = None
    """Where volume steps run (:mod:`mineral3d.cluster`); results do not depend on it, so it is no step setting."""
    corrections: Path | None = None
    """The user's painted corrections (``--corrections``): the model is fine-tuned on them (step ``correct``)."""

    @property
    def layout(self) -> RunLayout:
        """The paths of this run's outputs."""
        return RunLayout(self.out, self.model_dir)

    @property
    def phase_model(self) -> Path:
        """The model that segments: fine-tuned on the corrections when given, else the trained (or given) one."""
        return self.layout.corrected_model if self.corrections is not None else self.layout.model


STEPS = ("register", "train", "correct", "segment", "particles", "grades", "measure", "kernel", "validate", "report")
"""The step names in order (``run_steps.GRAPH`` holds the steps; a test checks they agree)."""


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB (Linux ``VmHWM``, else ``ru_maxrss``; 0 where unavailable).

    Recorded after each step in ``run.json``: the peak only grows, so the step at which it
    jumps is the one that set it (dask worker processes are not included). ``VmHWM`` is
    this process's own peak; ``ru_maxrss`` of a process started from a large one (a script,
    a test runner) also counts the memory its parent had when it was started.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # not on Windows
        return 0.0
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run(ctx: RunContext, *, stop_after: str | None = None) -> dict:
    """Run every step (skipping those already done with the same inputs); returns the timings."""
    ctx.out.mkdir(parents=True, exist_ok=True)
    write_json(ctx.out / "config.json", ctx.config.to_dict())
    write_json(ctx.layout.sample_record, sample_record(ctx.sample))
    from mineral3d.pipeline import run_steps

    for step in run_steps.GRAPH:
        name = step.name
        if not step.enabled(ctx):
            (ctx.out / ".steps" / f"{name}.json").unlink(missing_ok=True)  # not part of this run's result
            continue
        deps, settings, inputs = step.depends_on(ctx), step.settings(ctx), step.inputs(ctx)
        outputs = [ctx.layout.marker(name)]
        key = _key(name, settings, [ctx.keys.get(d) for d in deps], _fingerprint(inputs))
        record = ctx.out / ".steps" / f"{name}.json"
        done = False
        if record.is_file() and all(Path(o).exists() for o in outputs):
            try:
                done = json.loads(record.read_text()).get("key") == key
            except ValueError:
                done = False
        if done:
            ctx.log(f"{name}: up to date")
            ctx.timings[name] = {"seconds": 0.0, "skipped": True}
        else:
            record.unlink(missing_ok=True)
            t = time.perf_counter()
            try:
                step.run(ctx)
            except MemoryError as exc:
                if isinstance(exc, OutOfMemory):
                    raise
                raise OutOfMemory(name) from None
            dt = time.perf_counter() - t
            from mineral3d.nn.runtime import release_memory

            release_memory()
            write_json(record, {"key": key, "seconds": round(dt, 2)})
            ctx.timings[name] = {"seconds": round(dt, 2), "skipped": False, "peak_rss_mb": peak_rss_mb()}
            ctx.log(f"{name}: done in {dt:.1f} s")
        ctx.keys[name] = key
        if stop_after == name:
            break
    write_json(ctx.layout.run_record, {"timings": ctx.timings, "keys": ctx.keys})
    return ctx.timings


"""What a run output records of its sample, so that commands given only the run folder work."""


def sample_record(sample: Sample) -> dict:
    """The sample a run was made from: its folder, voxel size, target and phase table."""
    return {"sample": str(Path(sample.root).resolve()), "name": sample.config.name,
            "voxel_size_um": float(sample.voxel_size_um), "target": sample.phase_table.target,
            "phase_table": sample.phase_table.to_csv_text()}


def recorded_sample(out: str | os.PathLike, *, need: str = "this command") -> Sample:
    """The sample a run output was made from (as its ``sample.json`` records it)."""
    path = RunLayout(out).sample_record
    if not path.is_file():
        raise InputError(path, f"not found: not a mineral3d run output (or made by an older version); give --sample "
                               f"for {need}")
    root = Path(read_json(path)["sample"])
    if not (root / "sample.toml").is_file():
        raise InputError(path, f"the run's sample {root} is no longer there: give --sample for {need}")
    return open_sample(root)


def recorded_phase_table(volume: str | os.PathLike):
    """The phase table (with its target) recorded by the run whose output holds ``volume``
    (e.g. ``OUT/segmentation.zarr/phases``), or None: a volume from elsewhere."""
    from mineral3d.phase_table import PhaseTable

    p = Path(volume).resolve()
    for parent in list(p.parents)[:3]:
        rec = RunLayout(parent).sample_record
        if rec.is_file() and (parent / "config.json").is_file():
            data = read_json(rec)
            return PhaseTable.from_text(data["phase_table"], target=data.get("target"), source=str(rec))
    return None


def open_run(sample: str | os.PathLike, out: str | os.PathLike, *, config: RunConfig,
             model: str | os.PathLike | None = None, **kw) -> RunContext:
    s = open_sample(sample)
    s.validate()
    return RunContext(sample=s, out=Path(out), config=config, model_dir=None if model is None else Path(model), **kw)


