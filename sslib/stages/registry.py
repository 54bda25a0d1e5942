"""The pipeline's stages as data: what each runs, reads and which settings its runs use.

One entry per stage, in the order ``dvc.yaml`` runs them. :mod:`sslib.dvcgen` writes the
DVC files from these entries, :mod:`sslib.paths` (the outputs) and :mod:`sslib.fingerprint`
(the code); the ``resolve`` stage writes each run's settings (:func:`settings`) and each
stage's code fingerprint to ``pipeline/resolved/``, and every run depends on those two
files instead of on params.yaml sections and source files. So a run reruns when a value it
uses or the code it executes changes, and for nothing else.

A stage's ``settings`` function names exactly what its runs read, as resolved for the
run's variant: a key a variant switches off (the alignment keys with ``alignment: false``)
is not there, so changing it does not rerun that variant. Of a table of interchangeable
parts (``make_pseudo_labels.refiners``, ``train_seg.methods``) only the chosen entry's
settings are there, so changing another entry's reruns nothing.

A stage's ``needed(params)`` says whether the pipeline runs it at all: ``make_ir_labels`` and
``train_irn`` only when the chosen refiner declares ``needs_boundary_net``
(:mod:`sslib.refiners`). :mod:`sslib.dvcgen` leaves the others out of the DVC files, and the
stages after them drop their deps on them (``reads`` may be a function of the params).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..config import Params, choices, chosen, to_dict, variant_config
from ..registry import LOSS_NETWORKS, plugin_code

__all__ = ["Stage", "REGISTRY", "STAGES", "PER_RUN", "DOWNSTREAM", "BY_NAME", "pick", "drop", "variant_settings",
           "plugins_of", "runs_of", "needed_stages", "boundary_net_needed", "only_chosen"]

RUN = "${item.variant}/seed${item.seed}"  # a run's subfolder in DVC's matrix terms
ROOT_DATA = ("${data.root}", "${data.prepared_dir}")


@dataclass(frozen=True)
class Stage:
    """One pipeline stage. ``runs``: None (once), ``runs`` or ``runs.downstream`` (per variant and seed)."""

    name: str
    notebook: str | None
    doc: str
    settings: Callable[[Params, str | None], dict[str, Any]]
    #: the data deps: a tuple, or ``reads(params) -> tuple`` when they depend on the choices
    reads: tuple[str, ...] | Callable[[Params], tuple[str, ...]] = ()
    runs: str | None = None
    #: comment on the artifacts folder's ``persist: true`` (None: the folder is not persisted)
    persist: str | None = None
    #: ``needed(params)``: whether the pipeline runs the stage for these params (default: always)
    needed: Callable[[Params], bool] = lambda params: True

    def reads_for(self, params: Params) -> tuple[str, ...]:
        """The stage's data deps for ``params``."""
        return tuple(self.reads(params)) if callable(self.reads) else self.reads


def pick(params: Params, *keys: str) -> dict[str, Any]:
    """The values of dotted ``keys`` (sections or fields) as one nested dict."""
    out: dict[str, Any] = {}
    for key in keys:
        *parents, last = key.split(".")
        node, value = out, params
        for part in parents:
            node = node.setdefault(part, {})
            value = getattr(value, part)
        value = getattr(value, last)
        node[last] = to_dict(value) if hasattr(value, "__dataclass_fields__") else value
    return out


def variant_settings(params: Params, variant: str) -> dict[str, Any]:
    """``ssc`` with ``variants.<variant>`` over it, less the keys of what the variant switches off."""
    vc = variant_config(params, variant)
    v = to_dict(vc)
    off = set()  # what each switch turns off; any other key of ssc stays (a new one reruns every variant)
    if not v["reconstruction"]:
        off |= {"rec_loss", "beta_rec"}
    if not v["alignment"]:
        off |= {"beta_align", "align_threshold", "align_erosion", "warmup_epochs"}
    v["expansions"] = {k: x for k, x in v["expansions"].items() if k == v["expansion"]}  # only the chosen one's
    if not v["expansions"]:
        off.add("expansions")
    out = {k: x for k, x in v.items() if k not in off}
    code = plugins_of(choices(vc))
    if code:  # entries of plugin files the variant chooses: their code is the variant's, not the stage's
        out["plugins"] = code
    return out


def plugins_of(picked: list[tuple[Any, str]]) -> dict[str, str]:
    """``{plugin file: code hash}`` of the chosen entries (:func:`sslib.config.choices`) that plugins registered."""
    out: dict[str, str] = {}
    for entry, _ in picked:
        out.update(plugin_code(entry))
    return out


def drop(settings: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``settings`` without the dotted ``keys`` (those present): what a run provably does not use.

    Stages pick whole sections and drop what they do not read, so a key added to a section
    later is in every settings file of that section until a stage drops it: it reruns too
    much rather than too little.
    """
    for key in keys:
        *parents, last = key.split(".")
        node = settings
        for part in parents:
            node = node.get(part, {})
        node.pop(last, None)
    return settings


#: the CAM network's settings that only its reconstruction decoder and loss read
_RECONSTRUCTION_ONLY = ("model.decoder_width", "model.loss_network", "model.vgg_weights", "train_cam.decoder_lr",
                        "train_cam.decoder_betas")


def _train_cam(params: Params, variant: str | None) -> dict[str, Any]:
    v = variant_settings(params, variant)
    out = pick(params, "data", "augment", "model", "runs.devices", "train_cam", "superpixels.out_dir")
    if not v["reconstruction"]:
        drop(out, *_RECONSTRUCTION_ONLY)
    elif v["rec_loss"] != "perceptual":
        drop(out, "model.loss_network", "model.vgg_weights")
    elif not LOSS_NETWORKS.get(params.model.loss_network).get("needs_vgg_weights", False):
        drop(out, "model.vgg_weights")
    if not v["alignment"]:
        drop(out, "superpixels")
    return {**out, "variant": v}


def _train_irn(params: Params, variant: str | None) -> dict[str, Any]:
    """The boundary branch on an ImageNet backbone of the CAM network's kind (model.backbone and its weights)."""
    out = pick(params, "data", "model", "runs.devices", "make_ir_labels.out_dir", "train_irn")
    return drop(out, "model.frozen_stages", "model.bn_eval", "model.decoder_width", "model.loss_network",
                "model.vgg_weights")


def _eval_cam(params: Params, variant: str | None) -> dict[str, Any]:
    """The CAM network comes whole from model.pt (its expansion too): no variant settings."""
    return pick(params, "data", "runs.devices", "train_cam.out_dir", "eval_cam")


def _inspect_cams(params: Params, variant: str | None) -> dict[str, Any]:
    return {**pick(params, "data", "superpixels.out_dir", "runs.variants", "train_cam.out_dir", "eval_cam.out_dir"),
            # the alignment targets it draws; the rest of a variant is in its model and CAM files
            "variants": {v: {k: getattr(variant_config(params, v), k) for k in ("align_threshold", "align_erosion")}
                         for v in params.runs.variants}}


def boundary_net_needed(params: Params) -> bool:
    """Whether the chosen refiner (``make_pseudo_labels.refiner``) reads a boundary network."""
    return bool(chosen(params.make_pseudo_labels, "refiner")[0].get("needs_boundary_net", False))


def only_chosen(settings: dict[str, Any], params: Params, section: str, field: str, table: str) -> dict[str, Any]:
    """``settings`` with ``<section>.<table>`` cut down to the entry ``<section>.<field>`` chooses."""
    node = settings.get(section)
    if isinstance(node, dict) and table in node:
        _, own = chosen(getattr(params, section), field)
        name = getattr(getattr(params, section), field)
        node[table] = {name: to_dict(own)} if own is not None else {}
    return settings


def _make_pseudo_labels(params: Params, variant: str | None) -> dict[str, Any]:
    keys = ["data", "runs.devices", "eval_cam.out_dir", "make_pseudo_labels"]
    if boundary_net_needed(params):
        keys.insert(3, "train_irn.out_dir")
    return only_chosen(pick(params, *keys), params, "make_pseudo_labels", "refiner", "refiners")


def _make_pseudo_labels_reads(params: Params) -> tuple[str, ...]:
    boundary = (f"${{train_irn.out_dir}}/{RUN}/model.pt",) if boundary_net_needed(params) else ()
    return (*ROOT_DATA, f"${{eval_cam.out_dir}}/{RUN}", *boundary)


def _pseudo_label_table(params: Params, variant: str | None) -> dict[str, Any]:
    keys = ["data", "runs.downstream", "eval_cam.out_dir", "make_pseudo_labels"]
    if boundary_net_needed(params):
        keys[3:3] = ["make_ir_labels", "train_irn"]
    return only_chosen(pick(params, *keys), params, "make_pseudo_labels", "refiner", "refiners")


def _pseudo_label_table_reads(params: Params) -> tuple[str, ...]:
    irn = boundary_net_needed(params)
    return (*ROOT_DATA, "reports/eval_cam", *(("reports/make_ir_labels",) if irn else ()), "reports/make_pseudo_labels",
            "${eval_cam.out_dir}", *(("${make_ir_labels.out_dir}", "${train_irn.out_dir}") if irn else ()),
            "${make_pseudo_labels.out_dir}")


def _seg_keys(*keys: str) -> Callable[[Params, str | None], dict[str, Any]]:
    """``pick`` of ``keys`` with ``train_seg.methods`` and ``train_seg.crops`` cut down to the
    chosen method's and crop's settings."""
    def settings(params: Params, variant: str | None) -> dict[str, Any]:
        out = only_chosen(pick(params, *keys), params, "train_seg", "method", "methods")
        return only_chosen(out, params, "train_seg", "crop", "crops")
    return settings


def _train_seg(params: Params, variant: str | None) -> dict[str, Any]:
    """train_seg's own keys, and of eval_seg's the selection (and, selecting on val, the resize
    its per-epoch val score uses)."""
    keys = ["data", "runs.devices", "make_pseudo_labels.out_dir", "train_seg", "eval_seg.selection"]
    if params.eval_seg.selection == "best_on_val":
        keys.append("eval_seg.resize")
    return _seg_keys(*keys)(params, variant)


def _keys(*keys: str) -> Callable[[Params, str | None], dict[str, Any]]:
    return lambda params, variant: pick(params, *keys)


_TRAINED = "holds checkpoint.pt: an interrupted run resumes from it"
_PER_IMAGE = "per-image files and meta.json: an interrupted run resumes"

REGISTRY: tuple[Stage, ...] = (
    Stage("synthesize", "00_synthesize", "The synthetic scene set (VOC layout), the embedded default's data.",
          _keys("synthetic")),
    Stage("prepare", None, "Image labels, split lists and (VOC + SBD) SegmentationClassAug from the raw data set.",
          _keys("data"), reads=("${data.root}",),
          persist="a failed run keeps the last good files; stale ones are removed by sslib"),
    Stage("superpixels", "01_superpixels", "Superpixel maps of every image of the listed splits.",
          _keys("data", "superpixels"), reads=ROOT_DATA,
          persist="new maps are staged beside it (<out_dir>.partial/) and moved in on success; an interrupted run resumes"),
    Stage("data_report", "02_data_report", "Sample figure and statistics of the data set.",
          _keys("data", "superpixels.out_dir"), reads=(*ROOT_DATA, "${superpixels.out_dir}")),
    Stage("train_cam", "10_train_cam",
          "One CAM-network training per variant and seed (runs.variants x runs.seeds). Only the variants\n"
          "with alignment read the superpixels (and only their settings name them), but a DVC dep cannot\n"
          "depend on the matrix item, so every run declares the folder.",
          _train_cam, reads=(*ROOT_DATA, "${superpixels.out_dir}"), runs="runs", persist=_TRAINED),
    Stage("eval_cam", "11_eval_cam", "CAMs of every trained run (train + val splits) and their threshold sweep.",
          _eval_cam, reads=(*ROOT_DATA, f"${{train_cam.out_dir}}/{RUN}/model.pt"), runs="runs"),
    Stage("inspect_cams", "19_inspect_cams",
          "The inspection notebook on its default images (open it in JupyterLab for others).",
          _inspect_cams, reads=(*ROOT_DATA, "${train_cam.out_dir}", "${eval_cam.out_dir}", "${superpixels.out_dir}")),
    Stage("make_ir_labels", "20_make_ir_labels",
          "IRN's IR labels (the first pseudo labels) from the train CAMs of each downstream run\n"
          "(runs.downstream.variants x runs.downstream.seeds).",
          _keys("data", "eval_cam.out_dir", "make_ir_labels"), reads=(*ROOT_DATA, f"${{eval_cam.out_dir}}/{RUN}"),
          runs="runs.downstream", persist=_PER_IMAGE, needed=boundary_net_needed),
    Stage("train_irn", "21_train_irn", "IRN's boundary network on each downstream run's IR labels (the affinity loss).",
          _train_irn,
          reads=(*ROOT_DATA, f"${{make_ir_labels.out_dir}}/{RUN}"), runs="runs.downstream", persist=_TRAINED,
          needed=boundary_net_needed),
    Stage("make_pseudo_labels", "22_make_pseudo_labels",
          "Each downstream run's CAMs refined into pseudo labels (make_pseudo_labels.refiner; default\n"
          "IRN's random walk on its boundary map), BECO's confidence masks.",
          _make_pseudo_labels, reads=_make_pseudo_labels_reads,
          runs="runs.downstream", persist=_PER_IMAGE),
    Stage("pseudo_label_table", "29_pseudo_label_table",
          "The CAM -> IR label -> pseudo label table over the downstream runs, and its figure.",
          _pseudo_label_table, reads=_pseudo_label_table_reads),
    Stage("train_seg", "30_train_seg",
          "DeepLabV2 on each downstream run's pseudo labels (CE in the confidence mask, or BECO;\n"
          "with eval_seg.selection best_on_val it scores val after each epoch and keeps the best).",
          _train_seg,
          reads=(*ROOT_DATA, f"${{make_pseudo_labels.out_dir}}/{RUN}"), runs="runs.downstream", persist=_TRAINED),
    Stage("eval_seg", "31_eval_seg",
          "Multi-scale (+ dense CRF) segmentation of the val split by each downstream run's network.",
          _keys("data", "train_seg.out_dir", "eval_seg"),
          reads=(*ROOT_DATA, f"${{train_seg.out_dir}}/{RUN}/model.pt"), runs="runs.downstream"),
    Stage("paper_table", "39_paper_table",
          "The paper's three columns (CAM, pseudo label, segmentation) over the downstream runs.",
          _seg_keys("data", "runs.downstream", "train_seg", "eval_seg"),
          reads=(*ROOT_DATA, "reports/eval_cam", "reports/make_pseudo_labels", "reports/eval_seg",
                 "${eval_seg.out_dir}")),
    Stage("ablation", "50_ablation", "The ablation table and figures over all variants and seeds.",
          _keys("data", "runs.variants", "runs.seeds", "eval_cam"),
          reads=(*ROOT_DATA, "reports/eval_cam", "${eval_cam.out_dir}")),
)

#: stage name -> notebook stem (None: the stage runs as ``python -m sslib.stages.<stage>``)
STAGES: dict[str, str | None] = {s.name: s.notebook for s in REGISTRY}
#: stages that run once per variant and seed (DVC matrix stages)
PER_RUN = tuple(s.name for s in REGISTRY if s.runs)
#: per-run stages whose matrix is ``runs.downstream`` (the runs that feed pseudo labels)
DOWNSTREAM = tuple(s.name for s in REGISTRY if s.runs == "runs.downstream")
BY_NAME = {s.name: s for s in REGISTRY}


def needed_stages(params: Params) -> tuple[Stage, ...]:
    """The stages the pipeline runs for ``params`` (``REGISTRY`` less those not ``needed``)."""
    return tuple(s for s in REGISTRY if s.needed(params))


def runs_of(params: Params, stage: Stage) -> list[tuple[str, int]]:
    """``(variant, seed)`` of every run of a per-run ``stage``."""
    runs = params.runs.downstream if stage.runs == "runs.downstream" else params.runs
    return [(v, s) for v in runs.variants for s in runs.seeds]
