"""Every recipe that quotes a published number is that number's source, key for key.

Each source is a table transcribed from its files, one row per setting: our key in the
resolved recipe, the source's value (converted to our units where they differ, the
conversion written out), and the file that sets it. Defaults the source leaves to its code
are rows too. Read from facebookresearch/swav (``main_swav.py``, ``src/multicropdataset.py``,
``scripts/``) and vturrisi/solo-learn (``scripts/pretrain/cifar/``, ``solo/``).
"""

import re
from pathlib import Path

import pytest

from swav_plugin.host.resolve import load_recipe, resolve

ROOT = Path(__file__).resolve().parents[1]

# --- solo-learn, CIFAR-10 / CIFAR-100 -------------------------------------------------------

SOLO_SWAV = "solo-learn scripts/pretrain/cifar/swav.yaml"
SOLO_AUG = "solo-learn scripts/pretrain/cifar/augmentations/symmetric.yaml"
SOLO_ARGS = "solo-learn solo/args/pretrain.py"
SOLO_BASE = "solo-learn solo/methods/base.py"
SOLO_METHOD = "solo-learn solo/methods/swav.py"
SOLO_DATA = "solo-learn solo/data/pretrain_dataloader.py"
CIFAR_TRAIN_IMAGES = 50_000
SOLO_BATCH = 256  # optimizer.batch_size, per device; devices: [0]


def solo_learn_cifar(dataset: str, mean: list[float], std: list[float]) -> list[tuple]:
    steps_per_epoch = CIFAR_TRAIN_IMAGES // SOLO_BATCH  # its loader drops the last batch
    return [
        ("method.backbone.name", "resnet18_cifar",
         f"{SOLO_SWAV}: backbone resnet18; {SOLO_BASE}: CIFAR conv1 3x3 stride 1, no max-pool"),
        ("method.backbone.stem_padding", 2, f"{SOLO_BASE}: nn.Conv2d(3, 64, 3, 1, padding=2)"),
        ("method.backbone.zero_init_residual", False, f"{SOLO_BASE}: torchvision resnet18()"),
        ("method.head.hidden_dim", 2048, f"{SOLO_SWAV}: proj_hidden_dim"),
        ("method.head.output_dim", 128, f"{SOLO_SWAV}: proj_output_dim"),
        ("method.head.num_prototypes", 3000, f"{SOLO_SWAV}: num_prototypes"),
        ("method.head.freeze_prototypes_iters", 2 * steps_per_epoch,
         f"{SOLO_SWAV}: freeze_prototypes_epochs 2"),
        ("method.loss.temperature", 0.1, f"{SOLO_SWAV}: temperature"),
        ("method.loss.epsilon", 0.05, f"{SOLO_METHOD}: sk_epsilon default"),
        ("method.loss.sinkhorn_iterations", 3, f"{SOLO_METHOD}: sk_iters default"),
        ("method.loss.crops_for_assign", [0, 1], f"{SOLO_METHOD}: the num_large_crops (2)"),
        ("method.queue.length", 3840, f"{SOLO_SWAV}: queue_size"),
        ("method.queue.start_epoch", 50, f"{SOLO_SWAV}: epoch_queue_starts"),
        ("method.optimizer", "lars", f"{SOLO_SWAV}: optimizer.name"),
        ("method.lars_trust_coefficient", 0.02, f"{SOLO_SWAV}: kwargs.eta"),
        ("method.lars_clip", True, f"{SOLO_SWAV}: kwargs.clip_lr"),
        ("method.exclude_bias_norm", True, f"{SOLO_SWAV}: kwargs.exclude_bias_n_norm"),
        ("method.momentum", 0.9, f"{SOLO_ARGS}: lars momentum default"),
        ("method.lr", 0.6, f"{SOLO_SWAV}: optimizer.lr"),
        ("method.lr_batch_size", 256, f"{SOLO_ARGS}: lr x batch_size x devices x nodes / 256"),
        ("method.weight_decay", 1e-6, f"{SOLO_SWAV}: optimizer.weight_decay"),
        ("method.warmup_epochs", 10, f"{SOLO_BASE}: scheduler.warmup_epochs default"),
        ("method.warmup_start_ratio", 3e-5 / 0.6,
         f"{SOLO_BASE}: scheduler.warmup_start_lr default 3e-5, over lr 0.6"),
        ("method.final_lr_ratio", 0.0, f"{SOLO_BASE}: scheduler.min_lr default 0"),
        ("data.dataset.name", dataset, f"{SOLO_SWAV}: data.dataset"),
        ("data.transform.crops", [{"size": 32, "count": 2, "scale": [0.08, 1.0]}],
         f"{SOLO_AUG}: crop_size, num_crops, rrc crop_min_scale / crop_max_scale"),
        ("data.transform.interpolation", "bicubic", f"{SOLO_DATA}: RandomResizedCrop BICUBIC"),
        ("data.transform.color_jitter_prob", 0.8, f"{SOLO_AUG}: color_jitter.prob"),
        ("data.transform.brightness", 0.8, f"{SOLO_AUG}: color_jitter.brightness"),
        ("data.transform.contrast", 0.8, f"{SOLO_AUG}: color_jitter.contrast"),
        ("data.transform.saturation", 0.8, f"{SOLO_AUG}: color_jitter.saturation"),
        ("data.transform.hue", 0.2, f"{SOLO_AUG}: color_jitter.hue"),
        ("data.transform.grayscale_prob", 0.2, f"{SOLO_AUG}: grayscale.prob"),
        ("data.transform.blur_prob", 0.5, f"{SOLO_AUG}: gaussian_blur.prob"),
        ("data.transform.blur_sigma", [0.1, 2.0], f"{SOLO_DATA}: GaussianBlur sigma default"),
        ("data.transform.solarize_prob", 0.0, f"{SOLO_AUG}: solarization.prob"),
        ("data.transform.hflip_prob", 0.5, f"{SOLO_AUG}: horizontal_flip.prob"),
        ("data.transform.mean", mean, f"{SOLO_DATA}: MEANS_N_STD[{dataset!r}]"),
        ("data.transform.std", std, f"{SOLO_DATA}: MEANS_N_STD[{dataset!r}]"),
        ("data.augment", "cpu", f"{SOLO_DATA}: per-image torchvision transforms"),
        ("data.batch_size", SOLO_BATCH, f"{SOLO_SWAV}: optimizer.batch_size"),
        ("data.num_workers", 4, f"{SOLO_SWAV}: data.num_workers"),
        ("trainer.max_epochs", 1000, f"{SOLO_SWAV}: max_epochs"),
        ("trainer.devices", 1, f"{SOLO_SWAV}: devices [0]"),
        ("trainer.num_nodes", 1, f"{SOLO_ARGS}: num_nodes default"),
        ("trainer.strategy", "ddp", f"{SOLO_SWAV}: strategy"),
        ("trainer.precision", "16-mixed", f"{SOLO_SWAV}: precision"),
        ("trainer.sync_batchnorm", True, f"{SOLO_SWAV}: sync_batchnorm"),
    ]


# --- facebookresearch/swav, ImageNet --------------------------------------------------------

MAIN = "swav main_swav.py"
CROPS = "swav src/multicropdataset.py"


def official_imagenet(script: str, *, gpus: int, nodes: int, epochs: int, base_lr: float,
                      final_lr: float, warmup_epochs: int, start_warmup: float, freeze: int,
                      queue: int, sync_bn: str) -> list[tuple]:
    args = f"swav scripts/{script}"
    # --sync_bn apex groups the ranks by --syncbn_process_group_size (default 8) once the world
    # holds at least 8; --sync_bn pytorch synchronises over all of them
    grouped = sync_bn == "apex" and gpus * nodes // 8 > 0
    group_row = [("trainer.sync_batchnorm_group_size", 8,
                  f"{args}: --sync_bn apex; {MAIN}: --syncbn_process_group_size default 8")]
    return group_row * grouped + [
        ("method.backbone.name", "resnet50", f"{args}: --arch resnet50"),
        ("method.backbone.zero_init_residual", False, "swav src/resnet50.py: default"),
        ("method.head.hidden_dim", 2048, f"{MAIN}: --hidden_mlp default"),
        ("method.head.output_dim", 128, f"{args}: --feat_dim"),
        ("method.head.num_prototypes", 3000, f"{args}: --nmb_prototypes"),
        ("method.head.freeze_prototypes_iters", freeze, f"{args}: --freeze_prototypes_niters"),
        ("method.loss.temperature", 0.1, f"{args}: --temperature"),
        ("method.loss.epsilon", 0.05, f"{args}: --epsilon"),
        ("method.loss.sinkhorn_iterations", 3, f"{args}: --sinkhorn_iterations"),
        ("method.loss.crops_for_assign", [0, 1], f"{args}: --crops_for_assign"),
        ("method.queue.length", queue, f"{args}: --queue_length"),
        ("method.queue.start_epoch", 15, f"{args} / {MAIN}: --epoch_queue_starts"),
        ("method.optimizer", "lars", f"{MAIN}: LARC(SGD(...), trust_coefficient=0.001)"),
        ("method.lars_trust_coefficient", 0.001, f"{MAIN}: trust_coefficient=0.001"),
        ("method.lars_clip", False, f"{MAIN}: clip=False"),
        ("method.exclude_bias_norm", False, f"{MAIN}: SGD(model.parameters(), ...)"),
        ("method.momentum", 0.9, f"{MAIN}: SGD momentum=0.9"),
        ("method.lr", base_lr, f"{args}: --base_lr (used as given)"),
        ("method.lr_batch_size", 64 * gpus * nodes, f"{args}: --batch_size 64 x the GPUs"),
        ("method.final_lr_ratio", final_lr / base_lr, f"{args}: --final_lr / --base_lr"),
        ("method.warmup_epochs", warmup_epochs, f"{args}: --warmup_epochs"),
        ("method.warmup_start_ratio", start_warmup / base_lr,
         f"{args} / {MAIN}: --start_warmup / --base_lr"),
        ("method.weight_decay", 1e-6, f"{args}: --wd"),
        ("data.dataset.name", "image_folder", f"{CROPS}: datasets.ImageFolder"),
        ("data.transform.crops",
         [{"size": 224, "count": 2, "scale": [0.14, 1.0]},
          {"size": 96, "count": 6, "scale": [0.05, 0.14]}],
         f"{args}: --nmb_crops 2 6 --size_crops 224 96 --min/max_scale_crops"),
        ("data.transform.interpolation", "bilinear", f"{CROPS}: RandomResizedCrop default"),
        ("data.transform.hflip_prob", 0.5, f"{CROPS}: RandomHorizontalFlip(p=0.5)"),
        ("data.transform.color_jitter_prob", 0.8, f"{CROPS}: get_color_distortion, p=0.8"),
        ("data.transform.brightness", 0.8, f"{CROPS}: ColorJitter(0.8 s), s = 1"),
        ("data.transform.contrast", 0.8, f"{CROPS}: ColorJitter(0.8 s)"),
        ("data.transform.saturation", 0.8, f"{CROPS}: ColorJitter(0.8 s)"),
        ("data.transform.hue", 0.2, f"{CROPS}: ColorJitter(0.2 s)"),
        ("data.transform.grayscale_prob", 0.2, f"{CROPS}: RandomGrayscale(p=0.2)"),
        ("data.transform.blur_prob", 0.5, f"{CROPS}: PILRandomGaussianBlur p=0.5"),
        ("data.transform.blur_sigma", [0.1, 2.0], f"{CROPS}: radius_min 0.1, radius_max 2"),
        ("data.transform.solarize_prob", 0.0, f"{CROPS}: no solarisation"),
        ("data.transform.mean", [0.485, 0.456, 0.406], f"{CROPS}: mean"),
        ("data.transform.std", [0.228, 0.224, 0.225], f"{CROPS}: std"),
        ("data.augment", "gpu",
         f"{CROPS}: the transforms above, batched on the GPU (tested in distribution against "
         "torchvision's; augment: cpu is the per-image pipeline itself)"),
        ("data.transform.load_size", 512,
         f"{CROPS}: RandomResizedCrop of the whole image; ImageNet's are not brought down"),
        ("data.batch_size", 64, f"{args}: --batch_size (per GPU)"),
        ("data.num_workers", 10, f"{MAIN}: --workers default"),
        ("trainer.max_epochs", epochs, f"{args}: --epochs"),
        ("trainer.devices", gpus, f"{args}: #SBATCH --ntasks-per-node"),
        ("trainer.num_nodes", nodes, f"{args}: #SBATCH --nodes"),
        ("trainer.strategy", "ddp", f"{MAIN}: DistributedDataParallel"),
        ("trainer.precision", "16-mixed", f"{args}: --use_fp16 true"),
        ("trainer.sync_batchnorm", True, f"{args}: --sync_bn {sync_bn}"),
        ("run.seed", 31, f"{MAIN}: --seed default"),
    ]


#: recipe -> (the source files its header must name, the source's settings)
SOURCES = {
    "cifar10.yaml": (
        ["scripts/pretrain/cifar/swav.yaml", "augmentations/symmetric.yaml"],
        solo_learn_cifar("cifar10", [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
    ),
    "cifar100.yaml": (
        ["scripts/pretrain/cifar/swav.yaml", "augmentations/symmetric.yaml"],
        solo_learn_cifar("cifar100", [0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762]),
    ),
    "imagenet_64gpu.yaml": (
        ["scripts/swav_800ep_pretrain.sh"],
        official_imagenet("swav_800ep_pretrain.sh", gpus=8, nodes=8, epochs=800, base_lr=4.8,
                          final_lr=0.0048, warmup_epochs=10, start_warmup=0.3, freeze=313,
                          queue=0, sync_bn="apex"),
    ),
    "imagenet_bs256.yaml": (
        ["scripts/swav_200ep_bs256_pretrain.sh"],
        official_imagenet("swav_200ep_bs256_pretrain.sh", gpus=4, nodes=1, epochs=200,
                          base_lr=0.6, final_lr=0.0006, warmup_epochs=0, start_warmup=0.0,
                          freeze=5005, queue=3840, sync_bn="pytorch"),
    ),
}

RECIPES = sorted(p.name for p in (ROOT / "recipes").glob("*.yaml"))
#: A published figure quoted in a recipe's header: "89.17 %", "72.7 % linear".
PERCENT = re.compile(r"\d+(\.\d+)?\s?%")


def header(name: str) -> str:
    lines = (ROOT / "recipes" / name).read_text().splitlines()
    return "\n".join(line for line in lines if line.startswith("#"))


def value_at(recipe: dict, key: str):
    node = recipe
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise AssertionError(f"the recipe does not set {key}")
        node = node[part]
    return node


def normalised(value):
    if isinstance(value, (list, tuple)):
        return [normalised(v) for v in value]
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items()}
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-9, abs=1e-12)
    return value


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_recipe_is_its_source_key_for_key(name):
    recipe = resolve(load_recipe(ROOT / "recipes" / name))
    mismatches = [
        f"{key}: recipe {value_at(recipe, key)!r}, source {expected!r} ({where})"
        for key, expected, where in SOURCES[name][1]
        if normalised(value_at(recipe, key)) != normalised(expected)
    ]
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_recipe_header_names_its_source_files(name):
    text = header(name)
    for path in SOURCES[name][0]:
        assert path in text, f"{name}'s header does not name {path}"


@pytest.mark.parametrize("name", RECIPES)
def test_only_recipes_with_a_source_quote_a_number(name):
    quoted = PERCENT.search(header(name))
    assert name in SOURCES or quoted is None, f"{name} quotes {quoted.group()} with no source"


def test_a_wrong_value_is_reported():
    recipe = resolve(load_recipe(ROOT / "recipes" / "cifar10.yaml",
                                 ["data.transform.interpolation=bilinear"]))
    key, expected, _ = next(r for r in SOURCES["cifar10.yaml"][1] if r[0].endswith("interpolation"))
    assert normalised(value_at(recipe, key)) != normalised(expected)


def test_sync_bn_pytorch_spans_every_rank():
    # swav_200ep_bs256_pretrain.sh: --sync_bn pytorch, one group of all 4 GPUs
    recipe = resolve(load_recipe(ROOT / "recipes" / "imagenet_bs256.yaml"))
    assert "sync_batchnorm_group_size" not in recipe["trainer"]
