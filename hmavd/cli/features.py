"""``hmavd-features``: build, import or check a CLIP feature cache (see docs/features.md).

Subcommands::

    hmavd-features extract --images IMAGE_SET --metadata image_metadata.npy --out features/vitl14 \\
        [--weights open_clip_pytorch_model.bin] [--centers CENTER_IMAGES] [key=value ...]
    hmavd-features import --metadata image_metadata.npy --train clip_feature_maps_training.npy \\
        --test clip_feature_maps_test.npy [--centers-file center_clip.npy] \\
        [--train-text T.npy --test-text T.npy | --weights W.bin] --out features/nice
    hmavd-features check features/vitl14 --metadata image_metadata.npy
"""

from __future__ import annotations

import argparse
import datetime
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import (
    ValidatedConfig,
    add_config_arguments,
    config_to_dict,
    config_yaml,
    load_command_config,
    save_config,
)
from ..errors import UserError, run_command, setup_logging

log = logging.getLogger(__name__)

PROG = "hmavd-features"


@dataclass(frozen=True)
class FeaturesConfig(ValidatedConfig):
    """Settings of ``hmavd-features`` (packaged defaults: ``configs/features.yaml``)."""

    model: str = "ViT-L-14"  # open_clip architecture, "local-dir:/path" or a cached "hf-hub:org/repo"
    pretrained: str | None = "openai"  # tag: preprocessing/QuickGELU; weights from the local cache
    weights: str | None = None  # local weights file (wins over the cache)
    model_config: str | None = None  # extra open_clip model config JSON to register
    quick_gelu: bool | None = None  # None: from the pretrained tag
    cache_dir: str | None = None  # open_clip / Hugging Face cache to look in
    prompt_template: str = "This picture is of a {concept}."
    batch_size: int = 64
    chunk_size: int = 1024  # images per resumable chunk
    num_workers: int = 2  # image decoding processes
    device: str = "auto"
    normalize_import: bool = True  # L2-normalise imported image/text features
    # target bank (docs/features.md "Target banks")
    backend: str = "open_clip"  # "open_clip" | "timm" (optional package; image only, needs text_from)
    timm_kwargs: tuple[str, ...] = ()  # "key=value" arguments of timm.create_model (e.g. img_size=518)
    text_from: str | None = None  # reuse the text features of this feature cache (same concepts)
    layer: str = "final"  # "final" projection, a block index ("-2") or a relative depth ("0.5")
    pool: str = "auto"  # intermediate layers: "cls" | "mean" (ViT tokens) | "avg" (ResNet maps) | "auto"
    variants: tuple[str, ...] = ()  # image transforms: none, blur:K, lowres:R, noise:S, mosaic:B
    store_variants: bool = False  # also keep each variant's bank
    variant_mode: str = "mean"  # the bank: "mean" over the variants, or "concat" (V x D side by side, for heads)
    pre_resize: int = 0  # > 0: resize every image to S x S (bicubic) before the variant (visual-blur/UBP: 224)
    collapse_check: bool = True  # refuse collapsed image banks (median pair cosine / effective rank)
    max_median_cosine: float = 0.98
    min_effective_rank: float = 2.0

    def validate(self) -> None:
        for name in ("batch_size", "chunk_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name}: {getattr(self, name)} must be >= 1 (e.g. 64)")
        if self.num_workers < 0:
            raise UserError(f"num_workers: {self.num_workers} must be >= 0 (0 = decode images in this process)")
        if "{concept}" not in self.prompt_template:
            raise UserError(
                f"prompt_template: {self.prompt_template!r} lacks '{{concept}}'; put it where the name goes"
            )
        from ..features.banks import POOLS, parse_variants

        if self.pool not in POOLS:
            raise UserError(f"pool: {self.pool!r} is not one of {POOLS}; pick one")
        parse_variants(self.variants)
        if self.backend not in ("open_clip", "timm"):
            raise UserError(f"backend: {self.backend!r} is not 'open_clip' or 'timm'; pick one")
        if self.backend == "timm" and not self.text_from:
            raise UserError("text_from: a timm backbone has no text tower; pass text_from=/path/to/a/feature/cache")
        if self.pre_resize < 0:
            raise UserError(f"pre_resize: {self.pre_resize} must be >= 0 (0 = off, e.g. 224)")
        if self.variant_mode not in ("mean", "concat"):
            raise UserError(f"variant_mode: {self.variant_mode!r} is not 'mean' or 'concat'; pick one")
        if not 0.0 < self.max_median_cosine <= 1.0 or self.min_effective_rank < 0:
            raise UserError(
                f"max_median_cosine/min_effective_rank: {self.max_median_cosine}/{self.min_effective_rank}; "
                "give a cosine in (0, 1] and a rank >= 0"
            )

    def bank_provenance(self) -> dict:
        """The bank settings recorded in provenance.json (and read back by the load-time collapse check)."""
        return {
            "layer": self.layer,
            "pool": self.pool if self.layer != "final" else "final projection",
            "variants": list(self.variants),
            "variant_mode": self.variant_mode if self.variants else None,
            "pre_resize": self.pre_resize,
            "collapse_check": self.collapse_check,
            "collapse_thresholds": {
                "max_median_cosine": self.max_median_cosine,
                "min_effective_rank": self.min_effective_rank,
            },
        }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="CLIP image/text feature caches for HMAVD.")
    sub = parser.add_subparsers(dest="command", required=True)
    ext = sub.add_parser("extract", help="compute open_clip features of an image set")
    ext.add_argument("--images", type=Path, help="ThingsEEG2 image set root (training_images/, test_images/)")
    ext.add_argument("--train-images", type=Path, help="training split folder (overrides --images)")
    ext.add_argument("--test-images", type=Path, help="test split folder (overrides --images)")
    ext.add_argument("--train-concepts", type=Path, help="'file,concept' list for a flat training folder")
    ext.add_argument("--test-concepts", type=Path, help="'file,concept' list for a flat test folder")
    ext.add_argument("--metadata", type=Path, help="image_metadata.npy/.json: image order to follow")
    ext.add_argument("--write-metadata", type=Path, help="write the image order found as image_metadata")
    ext.add_argument("--centers", type=Path, help="folder of <test concept>/ images for center features")
    imp = sub.add_parser("import", help="import published pre-extracted features")
    imp.add_argument("--metadata", type=Path, required=True, help="image_metadata.npy of the feature rows")
    imp.add_argument("--train", type=Path, help="(N, D) or (N, 1, D) training image features")
    imp.add_argument("--test", type=Path, help="(N, D) or (N, 1, D) test image features")
    imp.add_argument("--tensor-file", type=Path, help="one file keyed by split (train/test[/center])")
    imp.add_argument("--centers-file", type=Path, help="(n_test_concepts, D) center features")
    imp.add_argument("--train-text", type=Path, help="(n_train_concepts, D) text features")
    imp.add_argument("--test-text", type=Path, help="(n_test_concepts, D) text features")
    chk = sub.add_parser("check", help="check a cache against image metadata")
    chk.add_argument("cache", type=Path)
    chk.add_argument("--metadata", type=Path, required=True)
    for p in (ext, imp):
        p.add_argument("--out", type=Path, required=True, help="feature cache folder to write")
        p.add_argument("--overwrite", action="store_true", help="replace an existing cache at --out")
        p.add_argument("--model", help="open_clip model name (= model=...)")
        p.add_argument("--pretrained", help="pretrained tag (= pretrained=...)")
        p.add_argument("--weights", help="local weights file (= weights=...)")
        p.add_argument("--model-config", help="open_clip model config JSON to register (= model_config=...)")
        p.add_argument("--cache-dir", help="open_clip/Hugging Face cache dir (= cache_dir=...)")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.add_argument("-v", "--verbose", action="store_true")
        add_config_arguments(p, default="features")
    return parser


def _encoder(cfg: FeaturesConfig):
    from ..features.clip import load_clip

    if cfg.backend == "timm":
        from ..features.timm_backend import load_timm

        enc = load_timm(cfg.model, cfg.weights, cfg.device, dict(_kv(t, "timm_kwargs") for t in cfg.timm_kwargs))
    else:
        enc = load_clip(
            cfg.model, cfg.pretrained, cfg.weights, cfg.model_config, cfg.device, cfg.cache_dir, cfg.quick_gelu
        )
    enc.set_layer(cfg.layer, cfg.pool)
    enc.pre_resize = cfg.pre_resize
    return enc


def _kv(token: str, key: str) -> tuple[str, object]:
    name, sep, value = str(token).partition("=")
    if not sep or not name:
        raise UserError(f"{key}: {token!r} is not key=value (e.g. img_size=518)")
    return name, yaml.safe_load(value)


def _text_from(cfg: FeaturesConfig, train, test):
    """Text features of another cache (``text_from``), checked to list the same concepts; None without it."""
    if not cfg.text_from:
        return None
    from ..features import cache as fc

    other = fc.load_feature_cache(cfg.text_from)
    for key, lst in (("train_concepts", train.concepts), ("test_concepts", test.concepts)):
        if list(other.provenance.get(key, [])) != list(lst):
            raise UserError(f"text_from: {cfg.text_from} lists other {key} than these images; use a cache of this set")
    return {k: other.arrays[k] for k in ("train_text_features", "test_text_features")}


def _split_list(args: argparse.Namespace, split: str, meta):
    """The image list of ``split`` and the folder it came from."""
    from ..features import images as im

    short = "train" if split == "training" else "test"
    folder, concepts = getattr(args, f"{short}_images"), getattr(args, f"{short}_concepts")
    if folder is None:
        if args.images is None:
            raise UserError("--images: not given; pass the image set root or --train-images and --test-images")
        folder = args.images / im.SPLIT_DIRS[split]
    if meta is not None:
        return im.image_list_from_metadata(folder, meta, split), folder
    if concepts is not None:
        return im.scan_flat(folder, concepts, f"--{short}-concepts"), folder
    return im.scan_split(folder, f"--{short}-images" if args.images is None else "--images"), folder


def _extract(args: argparse.Namespace, cfg: FeaturesConfig) -> int:
    from ..data.thingseeg2 import load_image_metadata, save_image_metadata
    from ..features.clip import extract_features
    from ..features.images import center_images, metadata_from_lists

    meta = load_image_metadata(args.metadata) if args.metadata else None
    (train, train_dir), (test, test_dir) = _split_list(args, "training", meta), _split_list(args, "test", meta)
    meta = meta or metadata_from_lists(train, test)
    if args.write_metadata:
        if args.write_metadata.exists() and load_image_metadata(args.write_metadata) != meta:
            raise UserError(f"--write-metadata: {args.write_metadata} exists with another image order; remove it")
        save_image_metadata(args.write_metadata, meta)
    centers = center_images(args.centers, test.concepts) if args.centers else None
    encoder = _encoder(cfg)
    partial = args.out.with_name(args.out.name + ".partial")
    arrays = extract_features(
        encoder,
        train,
        test,
        partial,
        cfg.prompt_template,
        centers,
        cfg.chunk_size,
        cfg.batch_size,
        cfg.num_workers,
        progress=not args.no_progress,
        variants=cfg.variants,
        store_variants=cfg.store_variants,
        variant_mode=cfg.variant_mode,
        text_arrays=_text_from(cfg, train, test),
    )
    prov = {
        **encoder.info,
        **cfg.bank_provenance(),
        "text_from": str(Path(cfg.text_from).resolve()) if cfg.text_from else None,
        "source": "extract",
        "prompt_template": cfg.prompt_template,
        "normalised": True,
        "center_features": f"mean normalised feature of the images in {args.centers}" if centers else None,
        "images": {"training": str(train_dir.resolve()), "test": str(test_dir.resolve())},
        "train_images": list(train.ids),
        "test_images": list(test.ids),
        "train_concepts": list(train.concepts),
        "test_concepts": list(test.concepts),
    }
    return _finish(args, cfg, arrays, prov, meta, partial)


def _finish(args, cfg, arrays, prov, meta, partial=None) -> int:
    import shutil

    from ..features import cache as fc

    prov["config"] = config_to_dict(cfg)
    prov["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    fc.save_feature_cache(args.out, arrays, prov)
    save_config(cfg, args.out / "config.yaml")
    cache = fc.load_feature_cache(args.out)
    fc.check_against_metadata(cache, meta)
    if partial is not None:
        shutil.rmtree(partial, ignore_errors=True)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in cache.arrays.items())
    print(f"wrote {args.out}: {cache.describe()}; {shapes}")
    return 0


def _import(args: argparse.Namespace, cfg: FeaturesConfig) -> int:
    from ..data.thingseeg2 import load_image_metadata
    from ..features import importer as fi
    from ..features.clip import concept_prompts

    meta = load_image_metadata(args.metadata)
    if args.tensor_file:
        feats, sources = fi.load_keyed_features(args.tensor_file), {"tensor_file": args.tensor_file}
    elif args.train and args.test:
        sources = {"train": args.train, "test": args.test}
        feats = {
            "training": fi.load_feature_file(args.train, "--train"),
            "test": fi.load_feature_file(args.test, "--test"),
        }
    else:
        raise UserError("import: give --train and --test feature files, or --tensor-file keyed by split")
    if args.centers_file:
        feats["center"], sources["centers"] = (
            fi.load_feature_file(args.centers_file, "--centers-file"),
            args.centers_file,
        )
    if bool(args.train_text) != bool(args.test_text):
        raise UserError("import: give both --train-text and --test-text, or neither (then text is computed)")
    prov = {"model": cfg.model, "pretrained": cfg.pretrained, "weights_file": cfg.weights, "prompt_template": None}
    prov.update({k: v for k, v in cfg.bank_provenance().items() if k.startswith("collapse")})
    if args.train_text and args.test_text:
        feats["train_text"] = fi.load_feature_file(args.train_text, "--train-text")
        feats["test_text"] = fi.load_feature_file(args.test_text, "--test-text")
        sources.update(train_text=args.train_text, test_text=args.test_text)
    elif "train_text" not in feats or "test_text" not in feats:
        try:
            encoder = _encoder(cfg)
        except UserError as err:
            raise UserError(
                f"import: no --train-text/--test-text files, and computing text needs CLIP: {err}"
            ) from None
        prov.update(encoder.info, prompt_template=cfg.prompt_template)
        feats["train_text"] = encoder.encode_texts(concept_prompts(meta.train_concepts, cfg.prompt_template))
        feats["test_text"] = encoder.encode_texts(concept_prompts(meta.test_concepts, cfg.prompt_template))
    arrays, prov = fi.build_import(
        meta,
        feats["training"],
        feats["test"],
        feats["train_text"],
        feats["test_text"],
        feats.get("center"),
        cfg.normalize_import,
        prov,
        sources,
    )
    return _finish(args, cfg, arrays, prov, meta)


def _body(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    if args.command == "check":
        from ..data.thingseeg2 import load_image_metadata
        from ..features import cache as fc

        cache = fc.load_feature_cache(args.cache)
        fc.check_against_metadata(cache, load_image_metadata(args.metadata))
        print(f"{args.cache}: {cache.describe()}; matches {args.metadata}")
        return 0
    cfg = load_command_config(FeaturesConfig, args, ("model", "pretrained", "weights", "model_config", "cache_dir"))
    if args.print_config:
        print(config_yaml(cfg), end="")
        return 0
    if (args.out / "provenance.json").exists() and not args.overwrite:
        raise UserError(f"--out: {args.out} already holds a feature cache; pass --overwrite or pick another folder")
    return _extract(args, cfg) if args.command == "extract" else _import(args, cfg)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hmavd-features``."""
    return run_command(PROG, _body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
