"""The config of a ViT design (a YAML file with a ``vit`` section, e.g.
``gen/configs/vit-digits.yaml``): board, clock, host link, the model it is generated for and
the engines' sizes. Checked as strictly as a GEMM config (``gen.config``): unknown keys, wrong
types and out-of-range values are refused with one line naming the field."""

from dataclasses import asdict, dataclass, field

import yaml

from ..errors import UserError
from ..schema import check_mapping

__all__ = ["ViTModelConfig", "ViTConfig", "VIT_SCHEMA", "parse_vit_config", "is_vit_config"]

AUTO = "auto"
ACTIVATIONS = ("gelu", "relu")
RECIPES = ("quick", "full")

VIT_SCHEMA = {
    "name": (str, None, None, "design name: letters, digits, '-' and '_'"),
    "board": (str, None, None, "a board from `python -m gen boards`"),
    "clock_mhz": (float, 10.0, 400.0, "accelerator clock in MHz, made by the ECP5 PLL"),
    "host": {
        "baud": (int, 1200, 12_000_000, "UART baud rate of the USB serial link"),
    },
    "vit": {
        "model": {
            "seed": (int, 0, 2 ** 31 - 1, "seed of the training, pruning and data split"),
            "activation": (str, None, None, f"the FFN's activation: {' or '.join(ACTIVATIONS)}"),
            "pruned": (bool, None, None, "prune (Zhang et al.) before quantizing"),
            "recipe": (str, None, None, f"training recipe: {' or '.join(RECIPES)}"),
        },
        "lanes": (int, 2, 64, "MAC lanes of the NSA engine, or auto (the balance search)"),
        "nmp_lanes": (int, 0, 64, "MAC lanes of the NMP engine (0: as lanes; with lanes: "
                                   "auto, auto too)"),
        "images_in_flight": (int, 1, 8, "images inside the engines at once (2: both busy)"),
        "fifo_depth": (int, 0, 1 << 16, "element pairs each FIFO holds (0: one message)"),
    },
}


@dataclass(frozen=True)
class ViTModelConfig:
    seed: int
    activation: str
    pruned: bool
    recipe: str


@dataclass(frozen=True)
class ViTConfig:
    """A checked ViT design config (see :data:`VIT_SCHEMA`)."""
    name: str
    board: str
    clock_mhz: float
    baud: int
    model: ViTModelConfig
    lanes: object              # int, or "auto" until the design stage runs the balance search
    nmp_lanes: object
    images_in_flight: int
    fifo_depth: int
    source: str = field(default="config", compare=False)

    @property
    def module_name(self):
        return f"{self.name.replace('-', '_')}_system"

    def as_dict(self):
        return {"name": self.name, "board": self.board, "clock_mhz": self.clock_mhz,
                "host": {"baud": self.baud},
                "vit": {"model": asdict(self.model), "lanes": self.lanes,
                        "nmp_lanes": self.nmp_lanes, "images_in_flight": self.images_in_flight,
                        "fifo_depth": self.fifo_depth}}

    def to_yaml(self):
        return yaml.safe_dump(self.as_dict(), sort_keys=False)


def is_vit_config(raw):
    """Whether a config mapping describes a ViT design (it has a ``vit`` section)."""
    return isinstance(raw, dict) and "vit" in raw


def parse_vit_config(raw, *, source="config"):
    """Validate a ViT config mapping and return a :class:`ViTConfig`."""
    from ..config import check_name
    try:
        values = check_mapping(raw, VIT_SCHEMA, accept=lambda path, value: value == AUTO and
                               path in ("vit.lanes", "vit.nmp_lanes"))
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    check_name(values["name"], f"{source}: name")
    vit, model = values["vit"], values["vit"]["model"]
    if (vit["nmp_lanes"] == AUTO) != (vit["lanes"] == AUTO):
        raise UserError(f"{source}: vit.nmp_lanes: auto only with vit.lanes: auto (the search "
                        f"chooses both); give both numbers, or both auto")
    if model["activation"] not in ACTIVATIONS:
        raise UserError(f"{source}: vit.model.activation: {model['activation']!r} is not known; "
                        f"use {' or '.join(ACTIVATIONS)}")
    if model["recipe"] not in RECIPES:
        raise UserError(f"{source}: vit.model.recipe: {model['recipe']!r} is not known; use "
                        f"{' or '.join(RECIPES)}")
    return ViTConfig(name=values["name"], board=values["board"],
                     clock_mhz=values["clock_mhz"], baud=values["host"]["baud"],
                     model=ViTModelConfig(**model), lanes=vit["lanes"],
                     nmp_lanes=vit["nmp_lanes"], images_in_flight=vit["images_in_flight"],
                     fifo_depth=vit["fifo_depth"], source=str(source))
