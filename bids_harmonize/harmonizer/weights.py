"""Model directories: safetensors weights plus a ``model.json`` card (MONAI-bundle-like).

A model directory holds::

    model.json                   the card (format version, config, training data, hashes...)
    ct_autoencoder.safetensors   stage 1
    mri_encoder.safetensors      stage 2
    correction.safetensors       stage 3

:func:`load_model` checks the card, its format version and the sha256 of every weight file
before building any net, and raises :class:`ModelError` with a one-line message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from bids_harmonize.safeio import atomic_write_json

LOGGER = logging.getLogger(__name__)

FORMAT_VERSION = "1.0"
CARD_NAME = "model.json"
STAGE_FILES = {
    "ct_autoencoder": "ct_autoencoder.safetensors",
    "mri_encoder": "mri_encoder.safetensors",
    "correction": "correction.safetensors",
}


def default_model_dir() -> Path:
    """The shipped demo model (``bids_harmonize/data/models/demo``)."""
    from importlib import resources

    return Path(str(resources.files("bids_harmonize.data").joinpath("models").joinpath("demo")))


class ModelError(RuntimeError):
    """A model directory that cannot be used (missing, corrupt, wrong version, bad hash)."""


#: Bounds on a card's network configuration, checked before anything is built. Not published
#: constants: generous sanity limits (ViT-B/16 has hidden 768, 12 layers, 12 heads, mlp 3072;
#: this app's models are far smaller), so that a corrupt or hostile card cannot ask for a
#: network that exhausts memory (hidden_size 400000 would be a 640 GB allocation).
CONFIG_BOUNDS = {
    ("anatomy", "roi_size"): (4, 256),
    ("anatomy", "patch_size"): (1, 64),
    ("anatomy", "hidden_size"): (4, 2048),
    ("anatomy", "mlp_dim"): (4, 8192),
    ("anatomy", "num_layers"): (1, 48),
    ("anatomy", "num_heads"): (1, 64),
    ("anatomy", "decoder_channels"): (1, 512),
    ("correction", "anatomy_channels"): (1, 512),
    ("correction", "downsample"): (1, 8),
}
#: Most parameters a card may describe (4e8 x 4 bytes = 1.6 GB of float32 weights).
MAX_PARAMETERS = 400_000_000


def config_sha256(config: dict) -> str:
    """sha256 of a card's ``config`` block as canonical JSON (sorted keys, no spaces).

    >>> config_sha256({"b": 1, "a": [1, 2]}) == config_sha256({"a": [1, 2], "b": 1})
    True
    """
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def check_config_bounds(config: dict, card_path) -> None:
    """Refuse a card whose network configuration is impossible or absurdly large.

    >>> check_config_bounds({"anatomy": {"hidden_size": 96, "num_heads": 5}}, "m/model.json")
    Traceback (most recent call last):
    ...
    bids_harmonize.harmonizer.weights.ModelError: model card m/model.json: anatomy.num_heads (5) ...
    """
    for (block, key), (lo, hi) in CONFIG_BOUNDS.items():
        section = config.get(block, {})
        if not isinstance(section, dict):
            raise ModelError(f"model card {card_path}: config.{block} is not an object")
        if key not in section:
            continue
        value = section[key]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ModelError(f"model card {card_path}: {block}.{key} must be an integer in "
                             f"{lo}..{hi}, got {value!r}")
    anatomy = config.get("anatomy", {})
    hidden, heads = anatomy.get("hidden_size"), anatomy.get("num_heads")
    if isinstance(hidden, int) and isinstance(heads, int) and hidden % heads:
        raise ModelError(f"model card {card_path}: anatomy.num_heads ({heads}) does not divide "
                         f"anatomy.hidden_size ({hidden})")
    roi, patch = anatomy.get("roi_size"), anatomy.get("patch_size")
    if isinstance(roi, int) and isinstance(patch, int) and roi % patch:
        raise ModelError(f"model card {card_path}: anatomy.patch_size ({patch}) does not divide "
                         f"anatomy.roi_size ({roi})")
    channels = config.get("correction", {}).get("channels", [])
    if not isinstance(channels, list | tuple) or not 1 <= len(channels) <= 6 or not all(
            isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= 1024 for c in channels):
        raise ModelError(f"model card {card_path}: correction.channels must be 1-6 integers in "
                         f"1..1024, got {channels!r}"[:200])
    if isinstance(hidden, int):  # a transformer layer has about 4 h^2 + 2 h mlp weights
        mlp = anatomy.get("mlp_dim", 4 * hidden)
        layers = anatomy.get("num_layers", 1)
        estimate = 2 * layers * (4 * hidden * hidden + 2 * hidden * mlp)  # two encoders
        if estimate > MAX_PARAMETERS:
            raise ModelError(f"model card {card_path}: the configuration describes about "
                             f"{estimate:.2g} parameters, more than {MAX_PARAMETERS:.0e}")


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a model's numbers."""
    out = {"python": platform.python_version()}
    for dist in ("bids_harmonize", "torch", "monai", "numpy", "safetensors", "einops"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            try:
                module = __import__(dist)
                out[dist] = getattr(module, "__version__", "unknown")
            except ImportError:
                out[dist] = "not installed"
    return out


def save_state(path, state_dict) -> str:
    """Write a state dict as safetensors (contiguous CPU copies); returns its sha256."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    save_file(tensors, str(path))
    return sha256_file(path)


def save_model(model_dir, net, card: dict) -> Path:
    """Write the three stages of ``net`` (a ``ThreeStageHarmonizer``) and the card.

    ``card`` gets ``format_version``, ``config`` and ``files`` (sha256 per weight file)
    filled in; everything else (name, version, training data, ...) is the caller's.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for attr, fname in STAGE_FILES.items():
        files[fname] = save_state(model_dir / fname, getattr(net, attr).state_dict())
    config = net.config.to_dict()
    card = {
        "format_version": FORMAT_VERSION,
        **{k: v for k, v in card.items() if k not in ("format_version", "files",
                                                       "config_sha256")},
        "config": config,
        "config_sha256": config_sha256(json.loads(json.dumps(config))),
        "files": files,
    }
    # the card last and atomically: a kill leaves no card, never a half-written one
    atomic_write_json(model_dir / CARD_NAME, card)
    return model_dir


@dataclass
class HarmonizerModel:
    """A verified, loaded model."""

    path: Path
    card: dict
    card_sha256: str
    net: object  # ThreeStageHarmonizer, eval mode, on CPU

    @property
    def config(self):
        return self.net.config

    @property
    def name(self) -> str:
        return self.card.get("name", self.path.name)

    @property
    def version(self) -> str:
        return str(self.card.get("version", "unknown"))

    @property
    def trained_tracers(self) -> list[str]:
        return list(self.card.get("training_data", {}).get("tracers", []))

    @property
    def trained_families(self) -> list[str]:
        return list(self.card.get("training_data", {}).get("tracer_families", []))

    def info(self) -> dict:
        """Name, version and card hash, for provenance sidecars."""
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.card_sha256,
            "path": str(self.path),
            "trained_on": self.trained_on,
        }

    @property
    def trained_on(self) -> str:
        """What the model was trained on, as the card says (``trained_on``; a description
        that says "simulated data only" counts), else "not stated in the model card"."""
        text = self.card.get("trained_on")
        if text:
            return str(text)
        if "simulated data only" in str(self.card.get("description", "")).lower():
            return "simulated data only"
        return "not stated in the model card"


def read_card(model_dir) -> tuple[dict, str]:
    """The verified card of a model directory and its sha256 (no weights loaded)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"model directory {model_dir} does not exist")
    card_path = model_dir / CARD_NAME
    if not card_path.is_file():
        raise ModelError(f"model directory {model_dir} has no {CARD_NAME} card")
    from bids_harmonize.safeio import (
        SIDECAR_LIMIT,
        UnsafeInputError,
        loads_json,
        read_bytes_bounded,
    )

    try:
        card = loads_json(read_bytes_bounded(card_path, SIDECAR_LIMIT).decode("utf-8"),
                          what=f"model card {card_path}")
    except UnsafeInputError as err:
        raise ModelError(str(err)) from None
    except OSError as err:
        raise ModelError(f"model card {card_path} cannot be read ({err.strerror or err})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"model card {card_path} is not valid JSON ({err})") from None
    if not isinstance(card, dict):
        raise ModelError(f"model card {card_path} is not a JSON object")
    version = card.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelError(
            f"model {model_dir} has format version {version!r}; this bids_harmonize reads "
            f"{FORMAT_VERSION!r} (retrain with: {card.get('retrain_command', 'the train level')})"
        )
    for key in ("config", "files"):
        if not isinstance(card.get(key), dict):
            raise ModelError(f"model card {card_path} lacks {key!r}")
    if "config_sha256" in card:
        if card["config_sha256"] != config_sha256(card["config"]):
            raise ModelError(f"model card {card_path}: its config does not match its "
                             "config_sha256 (edited after training?)")
    else:
        LOGGER.info("model card %s has no config_sha256 (written by an older version)",
                       card_path)
    check_config_bounds(card["config"], card_path)
    for fname in STAGE_FILES.values():
        if fname not in card["files"]:
            raise ModelError(f"model card {card_path} lists no sha256 for {fname}")
    for fname, expected in card_files(card, card_path).items():
        path = contained_file(model_dir, fname, card_path)
        if not path.is_file():
            kind = "weight file" if fname in STAGE_FILES.values() else "file"
            raise ModelError(f"model {model_dir} is missing {kind} {fname} (named in its card)")
        digest = sha256_file(path)
        if digest != expected:
            raise ModelError(
                f"weight file {path} has sha256 {digest[:12]}..., the card says "
                f"{str(expected)[:12]}...: corrupt or modified model"
            )
    return card, sha256_file(card_path)


def card_files(card: dict, card_path) -> dict[str, str]:
    """Every file a card names, with its sha256: ``files`` and the ensemble members.

    A member named in both places with two different hashes, or without a hash, is a
    :class:`ModelError`.

    >>> card_files({"files": {"a.safetensors": "11"}, "uncertainty": {"members": [
    ...     {"file": "ensemble/m1.safetensors", "sha256": "22"}]}}, "model.json")
    {'a.safetensors': '11', 'ensemble/m1.safetensors': '22'}
    """
    out = {}
    for name, digest in card["files"].items():
        if not isinstance(digest, str):
            raise ModelError(f"model card {card_path}: the sha256 of {name!r} is not text")
        out[name] = digest
    members = (card.get("uncertainty") or {}).get("members") or []
    if not isinstance(members, list):
        raise ModelError(f"model card {card_path}: uncertainty.members is not a list")
    for i, entry in enumerate(members):
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not (
                isinstance(entry.get("sha256"), str)):
            raise ModelError(f"model card {card_path}: uncertainty.members[{i}] needs 'file' "
                             "and 'sha256' (text)")
        name, digest = entry["file"], entry["sha256"]
        if out.get(name, digest) != digest:
            raise ModelError(f"model card {card_path}: two different sha256 for {name}")
        out[name] = digest
    return out


def contained_file(model_dir, name, card_path) -> Path:
    """``model_dir / name`` for a relative name that stays inside the model folder (links
    resolved); :class:`ModelError` for ``../x``, absolute paths or links leading out.

    >>> contained_file("/m", "../../etc/passwd", "/m/model.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    bids_harmonize.harmonizer.weights.ModelError: model card ... names '../../etc/passwd', ...
    """
    model_dir = Path(model_dir)
    bad = ModelError(f"model card {card_path} names {name!r}, which is not a file inside the "
                     "model folder")
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        raise bad
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or name.startswith("~"):
        raise bad
    path = model_dir / rel
    if not path.resolve().is_relative_to(model_dir.resolve()):
        raise bad
    return path


def load_model(model_dir) -> HarmonizerModel:
    """Verify then load a model directory (CPU, eval mode). Raises :class:`ModelError`."""
    from safetensors.torch import load_file

    from .config import HarmonizerConfig
    from .nets.harmonizer import ThreeStageHarmonizer

    model_dir = Path(model_dir)
    card, card_sha = read_card(model_dir)
    try:
        config = HarmonizerConfig.from_dict(card["config"])
    except (TypeError, ValueError) as err:
        raise ModelError(f"model card {model_dir / CARD_NAME} has a bad config: {err}") from None
    try:
        net = ThreeStageHarmonizer(config)
    except Exception as err:  # noqa: BLE001 - MONAI/torch refuse impossible shapes in many ways
        raise ModelError(f"model card {model_dir / CARD_NAME}: its config builds no network "
                         f"({type(err).__name__}: {str(err).strip()[:150]})") from None
    for attr, fname in STAGE_FILES.items():
        try:
            getattr(net, attr).load_state_dict(load_file(str(model_dir / fname)))
        except Exception as err:  # noqa: BLE001 - safetensors/torch: garbage or mismatched
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise ModelError(f"weight file {model_dir / fname} does not fit: {first}") from None
    net.eval()
    LOGGER.info(
        "loaded model %s %s from %s (card sha256 %s)",
        card.get("name"),
        card.get("version"),
        model_dir,
        card_sha[:12],
    )
    return HarmonizerModel(path=model_dir, card=card, card_sha256=card_sha, net=net)
