"""The configuration of a `generate` run: one frozen record, checked before anything is written."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ecad_ray.errors import UserError
from ecad_ray.metrics.config import MetricsConfig
from ecad_ray.models.registry import ModelSpec


@dataclass(frozen=True)
class GenerateConfig:
    """Everything that decides what a `generate` run produces and how it is spread over workers.

    The image-defining fields (model, size, steps, guidance, negative prompt, schedule, seeds)
    are recorded in run.json; resuming into a folder made with different ones is refused.
    """

    model: str = "demo"  # registry name, hub id or local folder
    output_dir: str = "runs/demo"
    prompts: tuple[str, ...] = ()  # from --prompt; exclusive with prompt_file
    prompt_file: str | None = None
    num_images_per_prompt: int = 1
    batch_size: int = 4  # images per generation call on one worker
    height: int | None = None  # None: the model's default
    width: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    negative_prompt: str = ""
    start_seed: int = 0  # image j of every prompt uses start_seed + j * seed_step
    seed_step: int = 1
    schedule: str | None = None  # ECAD caching schedule file
    transformer_weights: str | None = None  # transformer weights file replacing the model's own
    input_embeddings: str | None = None  # reuse this embeddings store instead of encoding
    num_workers: int = 1  # generation actors (one GPU each when GPUs exist); the pool's maximum
    min_workers: int | None = None  # the pool's minimum (autoscaling in between); None: num_workers (fixed pool)
    threads_per_worker: int = 1  # torch threads per actor on CPU
    address: str | None = None  # Ray cluster to join ("auto" or HOST:PORT); None starts a local one
    device: str = "auto"
    dtype: str = "auto"
    overwrite: bool = False  # regenerate images that already exist
    metrics: MetricsConfig | None = None  # score images inside the stream (metric actors)
    reference: str | None = None  # finished run with the reference images (PSNR/SSIM/LPIPS)
    fid_ref: str | None = None  # FID reference: image folder or statistics .npz

    def check_counts(self) -> None:
        """Reject non-positive counts with the option's name."""
        for option, value in (
            ("--num-images-per-prompt", self.num_images_per_prompt),
            ("--batch-size", self.batch_size),
            ("--num-workers", self.num_workers),
            ("--threads-per-worker", self.threads_per_worker),
            ("--steps", self.steps),
            ("--height", self.height),
            ("--width", self.width),
        ):
            if value is not None and value <= 0:
                raise UserError(f"{option} {value}: must be a positive integer")
        if self.min_workers is not None and not 1 <= self.min_workers <= self.num_workers:
            raise UserError(
                f"--min-workers {self.min_workers}: must be between 1 and --num-workers ({self.num_workers})")
        if self.guidance_scale is not None and self.guidance_scale < 0:
            raise UserError(f"--guidance-scale {self.guidance_scale}: must be >= 0")
        if self.seed_step == 0 and self.num_images_per_prompt > 1:
            raise UserError("--seed-step 0: every image of a prompt would get the same seed")
        if self.prompts and self.prompt_file:
            raise UserError("--prompt and --prompt-file: give one or the other, not both")
        if not self.prompts and not self.prompt_file and not self.input_embeddings:
            raise UserError("no prompts: give --prompt, --prompt-file or --input-embeddings")

    def pool_size(self) -> tuple[int, int]:
        """(min, max) generation actors: the pool autoscales in between as the cluster allows."""
        return (self.num_workers if self.min_workers is None else self.min_workers), self.num_workers

    def to_dict(self) -> dict:
        """Plain JSON-able dict (for run.json)."""
        return asdict(self)


@dataclass(frozen=True)
class ImageSettings:
    """The settings that, with prompt and seed, fully determine an image."""

    model: str
    height: int
    width: int
    steps: int
    guidance_scale: float
    negative_prompt: str
    schedule: str  # schedule name, "none" when uncached

    @classmethod
    def resolve(cls, config: GenerateConfig, model_spec: ModelSpec, schedule_name: str = "none") -> "ImageSettings":
        """Fill model defaults and check sizes against what the model accepts."""
        settings = cls(
            model=model_spec.name,
            height=config.height or model_spec.height,
            width=config.width or model_spec.width,
            steps=config.steps or model_spec.steps,
            guidance_scale=model_spec.guidance_scale if config.guidance_scale is None else config.guidance_scale,
            negative_prompt=config.negative_prompt,
            schedule=schedule_name,
        )
        multiple = size_multiple(model_spec)
        for option, value in (("--height", settings.height), ("--width", settings.width)):
            if value % multiple:
                lower = max(multiple, value - value % multiple)
                raise UserError(
                    f"{option} {value}: model {model_spec.name} needs a multiple of {multiple} "
                    f"(VAE downsampling × patch size); try {lower} or {lower + multiple}"
                )
        return settings


def size_multiple(model_spec: ModelSpec) -> int:
    """The pixel multiple a model's height and width must be (VAE factor × transformer patch)."""
    if model_spec.builtin:
        from ecad_ray.models.demo import demo_config, vae_scale_factor

        return vae_scale_factor() * demo_config()["transformer"]["patch_size"]
    return model_spec.model_family.size_multiple


def load_config_file(path: str | Path) -> dict:
    """Read a YAML run config whose keys are `GenerateConfig` fields; unknown keys are refused."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"--config {path}: not valid YAML ({err})".replace("\n", " ")) from err
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping of option names to values")
    data = {k.replace("-", "_"): v for k, v in data.items()}
    known = {f.name for f in fields(GenerateConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"--config {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if isinstance(data.get("metrics"), (list, str, dict)):
        data["metrics"] = _metrics_from_yaml(path, data["metrics"])
    return data


def _metrics_from_yaml(path: Path, value) -> MetricsConfig:
    """`metrics: [clip, fid]`, `metrics: clip,fid` or `metrics: {metrics: [...], clip_model: ...}`."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list):
        value = {"metrics": value}
    names = value.get("metrics", [])
    value = {**value, "metrics": tuple([names] if isinstance(names, str) else names)}
    try:
        return MetricsConfig(**value)
    except TypeError as err:
        raise UserError(f"--config {path}: metrics: {err}") from err
