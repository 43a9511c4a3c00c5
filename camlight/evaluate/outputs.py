"""What `explain.py evaluate` writes (rank 0): results.json, per_class.csv, index.html and
skipped.txt beside the streamed per_image.csv, the table in the papers' terms, and W&B when on."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from contextlib import contextmanager
from pathlib import Path

from omegaconf import OmegaConf

from camlight.viz import write_csv
from camlight.viz.html import tables_report

log = logging.getLogger(__name__)

# Score → (its name in the papers' tables, shown as a percentage). Scores not listed stay in results.json.
LABELS = {
    "top1_loc_err": ("top-1 loc err", True),
    "top5_loc_err": ("top-5 loc err", True),
    "gt_known_loc_err": ("GT-known loc err", True),
    "top1_cls_err": ("top-1 cls err", True),
    "top5_cls_err": ("top-5 cls err", True),
    "max_box_acc_v2": ("MaxBoxAccV2", True),
    "box_acc_v2_calibrated": ("BoxAccV2 at calibrated τ", True),
    "pxap": ("PxAP", True),
    "pointing": ("pointing", True),
    "pointing_class_mean": ("pointing (class mean)", True),
    "deletion_auc": ("deletion AUC", False),
    "insertion_auc": ("insertion AUC", False),
    "aopc": ("AOPC", False),
    "grabcut_iou": ("GrabCut mask IoU", False),
}


def formatted(name: str, value: float) -> str:
    """A score as the papers print it: "46.3 %" for accuracies and errors, "0.123" for AUCs."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    percent = LABELS.get(name, (name, False))[1]
    return f"{100 * value:.1f} %" if percent else f"{value:.3f}"


def table(scores: dict[str, dict[str, float]]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): a row per method, a column per score in `LABELS` that some method has."""
    present = [k for k in LABELS if any(k in s for s in scores.values())]
    header = ["method", *(LABELS[k][0] for k in present)]
    rows = [[method, *(formatted(k, s.get(k)) for k in present)] for method, s in scores.items()]
    return header, rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r):
        cells = zip(r, widths, strict=True)
        return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(cells))

    return "\n".join([line(header), *(line(r) for r in rows)])


def sha256(path) -> str | None:
    if not path or not Path(path).is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def per_class_rows(per_class: dict[str, list[dict]], class_names) -> list[dict]:
    """A row per class: its name and `<method>/<score>` columns (classes without images left out)."""
    rows = []
    for c, name in enumerate(class_names):
        row: dict = {"class": name}
        for method, classes in per_class.items():
            for k, v in classes[c].items():
                if k == "images":
                    row["images"] = int(v)
                else:
                    row[f"{method}/{k}"] = round(v, 6)
        if len(row) > 1:
            rows.append(row)
    return rows


def write_results(out: Path, cfg, results: dict, class_names, about: dict, skipped) -> None:
    """Write results.json, per_class.csv, index.html and skipped.txt; log the table; log to W&B."""
    scores = results["scores"]
    document = {
        **about,
        "checkpoint_sha256": sha256(cfg.checkpoint),
        "scores": scores,
        "thresholds": results["thresholds"],
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    _atomic_text(out / "results.json", json.dumps(document, indent=2, default=float))
    rows = per_class_rows(results["per_class"], class_names)
    if rows:
        write_csv(out / "per_class.csv", rows)
    if skipped:
        _atomic_text(out / "skipped.txt", "".join(f"{p}\t{r}\n" for p, r in skipped))
    header, table_rows = table(scores)
    title = f"camlight evaluate — {about['model']} on {about['split']} ({about['images']} images)"
    log.info("%s\n%s", title, text_table(header, table_rows))
    sections = [("scores", header, table_rows)]
    if about.get("calibration_scores"):
        h, r = table({m: {"max_box_acc_v2": s.get("max_box_acc_v2")} for m, s in about["calibration_scores"].items()})
        sections.append((f"calibration split ({about['calibrate_on']}): thresholds chosen here", h, r))
    if rows:
        columns = list(dict.fromkeys(k for row in rows for k in row))
        sections.append(("per class", columns, [[_cell(row.get(k)) for k in columns] for row in rows]))
    subtitle = f"{about['data']}; methods {', '.join(about['methods'])}; protocols {', '.join(about['protocols'])}"
    _atomic_text(out / "index.html", tables_report(title, sections, subtitle))
    if cfg.wandb.mode != "disabled":
        _to_wandb(out, cfg, scores, header, table_rows, about)
    log.info("results in %s", out)


def _cell(v) -> str:
    return "" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextmanager
def wandb_run(cfg, folder: Path, job_type: str, config: dict):
    """A W&B run of this command (`cfg.wandb`: mode, project, entity, tags), written under
    `folder`, finished after the body."""
    import wandb

    run = wandb.init(
        project=cfg.wandb.project,
        entity=cfg.wandb.entity,
        mode=cfg.wandb.mode,
        dir=str(folder),
        job_type=job_type,
        tags=list(cfg.wandb.tags),
        config=config,
    )
    try:
        yield run
    finally:
        run.finish()


def _to_wandb(out: Path, cfg, scores, header, rows, about) -> None:
    """The scores as W&B summary keys `evaluate/<method>/<score>` and a table `evaluate/scores`."""
    import wandb

    with wandb_run(cfg, out, "evaluate", {k: v for k, v in about.items() if k != "calibration_scores"}) as run:
        run.summary.update({f"evaluate/{m}/{k}": v for m, s in scores.items() for k, v in s.items()})
        run.log({"evaluate/scores": wandb.Table(columns=header, data=rows)})
