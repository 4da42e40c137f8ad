"""The embedded default task's whole GFNet pipeline, from nothing, on a CPU (``gfnet train-default-task``).

Task: cluttered Fashion-MNIST (112×112 canvases, one 28×28 item + 16 clutter fragments, 10 classes), a small-CNN
GFNet with P = 28, T = 5 (:func:`feature_nets.gfnet.build_small_gfnet` defaults). Stages, each resumable:

1. ``pretrain``: the small-CNN encoder trained as a plain classifier on the clean 28×28 items
   (``pretrain_epochs``), then copied into both the global and the local encoder — the analogue of the
   ImageNet-pretrained backbones the paper starts from.
2. ``stage1``: encoders + GRU classifier with uniformly random patches, fresh clutter every epoch
   (:func:`feature_nets.training.train_stage1`, ``epochs``). Output ``OUT/stage1/`` and the clean
   checkpoint ``OUT/cluttered_fmnist_gfnet_stage1.pth.tar`` (no optimiser state; random policy).
3. ``stage2``: the paper's PPO for the patch policy on the frozen stage-1 networks
   (:func:`agents.paper_ppo.train_paper_ppo`, ``ppo_steps`` env steps) → ``OUT/stage2/`` and
   ``OUT/cluttered_fmnist_gfnet_stage2.pth.tar`` (stage-1 networks + learned policy).
4. ``stage3``: encoders + classifier fine-tuned with patches sampled from the fixed policy
   (:func:`feature_nets.training.train_stage3`, ``stage3_epochs``) → ``OUT/cluttered_fmnist_gfnet_stage3.pth.tar``.

   The stage-2 and stage-3 checkpoints store their policy's own numbers, as the released files do
   (:func:`store_results`: ``paper-ppo`` measured with the benchmark's protocol on the test canvases, thresholds
   fitted on the val split → ``anytime_classification``, ``budgeted_batch_classification``, ``dynamic_threshold``),
   which the benchmark shows as the "as published" row (docs/benchmark.md).
5. ``sb3``: a Stable-Baselines3 PPO agent on the shipped networks (``sb3_steps``, the ``ppo`` recipe of
   :data:`agents.sb3.recipes.RECIPES`) → ``OUT/sb3_ppo/``.

``ship`` picks the checkpoint that becomes ``OUT/cluttered_fmnist_gfnet.pth.tar`` (and the env's default with
``install``): ``stage2`` (default) keeps the stage-1 networks, which classify well with any patches (the
environment's point: every agent is judged on the same frozen networks); ``stage3`` networks are tuned to the
learned policy's patches, which lifts that policy but lowers the glance and random-patch accuracy (the figures
are in gfnet_env/weights/MODEL_CARD.md).

After each network stage the per-step top-1 on the 10,000 test canvases is measured with several ways of
choosing patches (glance only is step 0 of each): ``random`` (uniform, seeded), ``centre``, ``item`` (the patch
exactly on the item, using the dataset's ``item_position`` — an upper reference, not a policy) and, where
there is a learned policy, ``policy`` (its mean). Results go to ``OUT/pipeline.json`` with the wall time of
every stage. ``install`` copies the shipped checkpoint to ``gfnet_env/weights/cluttered_fmnist_gfnet.pth.tar``
(the default weights of ``GFNet-ClutteredFashionMNIST-v0``) and the SB3 agent to
``gfnet_env/weights/sb3_ppo_cluttered_fmnist.zip``.

Example::

    from gfnet_cli.default_task import PipelineConfig, train_default_task
    report = train_default_task(PipelineConfig(out="runs/default_task", stop_after="stage1"))
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from feature_nets.files import atomic_save, atomic_write_text
from feature_nets.trust import load_torch_file
from gfnet_env.settings import DEFAULT_GRID_SIZE

__all__ = ["ENV_ID", "STAGES", "TASK", "PipelineConfig", "evaluate_checkpoint",
           "evaluate_default_task", "export_checkpoint", "greedy_oracle_top1", "item_chooser", "store_results",
           "train_default_task"]

STAGES = ("pretrain", "stage1", "stage2", "stage3", "sb3")
ENV_ID = "GFNet-ClutteredFashionMNIST-v0"
#: Geometry of the default task (fixed: the env id stands for it).
TASK = dict(canvas_size=112, num_clutter=16, patch_size=28, T=5, num_classes=10)


@dataclass
class PipelineConfig:
    """Options of :func:`train_default_task` (the options of ``gfnet train-default-task``).

    Attributes:
        out: output folder (created).
        stop_after: last stage to run, one of :data:`STAGES`.
        pretrain_epochs: encoder pretraining epochs on clean items.
        epochs: stage-1 epochs, fresh clutter each (None: the small_cnn recipe's, 16).
        batch_size: stage-1/3 batch size (None: the recipe's, 64).
        ppo_steps: stage-2 env steps (4 focus steps per canvas: 440k = 2 passes over the train canvases).
        ppo_batch_size: stage-2 images per PPO update.
        stage3_epochs: stage-3 epochs.
        sb3_steps: SB3 PPO env steps.
        ship: which networks become the final/installed checkpoint, ``"stage2"`` or ``"stage3"``.
        train_samples: use only this many training canvases (None: all).
        eval_samples: use only this many test canvases (None: all).
        seed: seed of every stage.
        workers: DataLoader workers (0 is best on 2 cores).
        data_root: folder with the Fashion-MNIST IDX files (None: search).
        resume: continue an interrupted run in ``out``.
        force_settings: with ``resume``, continue an interrupted stage whose saved settings differ (recorded).
        install: copy the final checkpoint (and the SB3 agent) to ``gfnet_env/weights/``.
        progress: show progress bars.
    """

    out: str | Path
    stop_after: str = "sb3"
    pretrain_epochs: int = 2
    epochs: int | None = None
    batch_size: int | None = None
    ppo_steps: int = 440_000
    ppo_batch_size: int = 256
    stage3_epochs: int = 3
    sb3_steps: int = 300_000
    ship: str = "stage2"
    train_samples: int | None = None
    eval_samples: int | None = None
    seed: int = 0
    workers: int = 0
    data_root: str | None = None
    resume: bool = False
    force_settings: bool = False
    install: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.stop_after not in STAGES:
            raise ValueError(f"stop_after must be one of {list(STAGES)}, got {self.stop_after!r}")
        if self.ship not in ("stage2", "stage3"):
            raise ValueError(f"ship must be 'stage2' or 'stage3', got {self.ship!r}")


def log(msg: str) -> None:
    """Print ``msg`` with the time of day."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------- evaluation


def item_chooser(dataset, patch_size: int):
    """A ``choose`` function for :func:`feature_nets.training.evaluate_anytime`: the patch exactly on the item."""
    span = dataset.canvas_size - patch_size

    def choose(prev, memory, indices):
        pos = torch.tensor([dataset.item_position(int(i)) for i in indices], dtype=torch.float32)
        return ((pos + 0.5) / span).clamp(0.0, 1.0), memory

    return choose


def greedy_oracle_top1(model, dataset, grid: int = DEFAULT_GRID_SIZE, batch_size: int = 250, device: str = "cpu") -> list[float]:
    """Per-step top-1 (%) of the greedy label oracle (the ``oracle`` agent on a grid×grid grid) over ``dataset``."""
    import agents
    from gfnet_env.core import GFNetCore
    from gfnet_env.rollout import rollout
    from gfnet_env.settings import EnvSettings

    settings = EnvSettings(obs_mode="gru", action_mode="grid", grid_size=grid)
    with GFNetCore(model, dataset, batch_size, settings, device=device) as core:
        return rollout(core, agents.make("oracle", grid_size=grid), list(range(len(dataset)))).top1()


def evaluate_default_task(model, dataset, modes=("random", "centre", "item"), batch_size: int = 500,
                          seed: int = 0, oracle: bool = False, fresh_clutter: bool = True) -> dict[str, Any]:
    """Per-step test top-1 (%) for each way of choosing patches; ``glance`` is step 0 (the same for all).

    ``fresh_clutter`` adds ``random_fresh_clutter``: random patches on the same test items with other clutter
    and positions (the dataset at epoch 1), a check that the numbers do not hinge on one draw of canvases.
    ``oracle`` adds ``oracle_greedy_7x7`` (:func:`greedy_oracle_top1`, an upper bound; a few minutes).
    """
    from feature_nets.training import evaluate_anytime

    res: dict[str, Any] = {"n": len(dataset)}
    for mode in modes:
        t0 = time.time()
        actions = item_chooser(dataset, model.patch_size) if mode == "item" else mode
        r = evaluate_anytime(model, dataset, actions=actions, batch_size=batch_size, seed=seed)
        res[mode] = [round(v, 2) for v in r.top1]
        res.setdefault("seconds", {})[mode] = round(time.time() - t0, 1)
    res["glance"] = res[modes[0]][0]
    if fresh_clutter and hasattr(dataset, "set_epoch"):
        t0 = time.time()
        fresh = copy.copy(dataset)
        fresh.set_epoch(1)
        r = evaluate_anytime(model, fresh, actions="random", batch_size=batch_size, seed=seed)
        res["random_fresh_clutter"] = [round(v, 2) for v in r.top1]
        res["seconds"]["random_fresh_clutter"] = round(time.time() - t0, 1)
    if oracle:
        t0 = time.time()
        res["oracle_greedy_7x7"] = [round(v, 2) for v in greedy_oracle_top1(model, dataset)]
        res["seconds"]["oracle_greedy_7x7"] = round(time.time() - t0, 1)
    return res


def export_checkpoint(model, path: Path, **extra) -> Path:
    """A clean shipped checkpoint: weights, spec, multiply-adds and results, no optimiser state."""
    from feature_nets.checkpoint import save_checkpoint

    return save_checkpoint(model, path, **extra)


def evaluate_checkpoint(checkpoint, out, eval_samples: int | None = None, data_root: str | None = None,
                        oracle: bool = False) -> dict[str, Any]:
    """Per-step top-1 of ``checkpoint`` on the test canvases for each way of choosing patches (``policy``
    too for a stage ≥ 2 checkpoint; the greedy oracle with ``oracle``); written to ``out/eval.json``."""
    from feature_nets.checkpoint import load_checkpoint
    from gfnet_env.data.cluttered_fashion_mnist import ClutteredFashionMNIST

    t0 = time.time()
    ckpt = load_checkpoint(checkpoint, with_policy=True)
    model = ckpt.model
    test = ClutteredFashionMNIST("test", seed=0, num_samples=eval_samples, root=data_root,
                                 canvas_size=model.image_size, num_clutter=TASK["num_clutter"])
    modes = ("random", "centre", "item") + (("policy",) if ckpt.extra.get("stage", 1) >= 2 else ())
    ev = evaluate_default_task(model, test, modes=modes, oracle=oracle)
    ev["checkpoint"] = str(checkpoint)
    ev["total_seconds"] = round(time.time() - t0, 1)
    ev["threads"] = torch.get_num_threads()
    atomic_write_text(Path(out) / "eval.json", json.dumps(ev, indent=1))
    return ev


def store_results(checkpoint, out=None, eval_samples: int | None = None, data_root: str | None = None,
                  progress: bool = False) -> dict[str, Any]:
    """Measure ``paper-ppo`` (``checkpoint``'s policy) with the benchmark's protocol on the test canvases (all of
    them unless ``eval_samples``), thresholds fitted on the val split, and write ``anytime_classification``,
    ``budgeted_batch_classification`` and ``dynamic_threshold`` into ``checkpoint``
    (:func:`agents.benchmark.store_results.store_measured_results`: every other entry kept bit for bit). Returns what
    was stored and the seconds it took; with ``out`` also written to ``out/stored_results.json``."""
    from agents.benchmark.store_results import store_measured_results

    t0 = time.time()
    res = store_measured_results(checkpoint, ENV_ID, env_kwargs={"data_root": data_root} if data_root else None,
                                 episodes=eval_samples, device="cpu", verbose=progress)
    e = res["agents"]["paper-ppo"]
    stored = {"checkpoint": str(checkpoint), "images": res["episodes"], "fit": res["fit"]["images"],
              "anytime_classification": e["anytime_top1"],
              "budgeted_batch_classification": [e["budgeted"]["madds"], e["budgeted"]["top1"]],
              "seconds": round(time.time() - t0, 1)}
    if out is not None:
        atomic_write_text(Path(out) / "stored_results.json", json.dumps(stored, indent=1))
    return stored


# ------------------------------------------------------------------------------------------- pipeline


def train_default_task(cfg: PipelineConfig, command: str | None = None) -> dict[str, Any]:
    """Run the pipeline's stages up to ``cfg.stop_after`` (see the module docstring); returns the report.

    The report, ``cfg.out/pipeline.json``, is rewritten after every stage: the commands that built the run
    (``command``, appended; resumed runs keep the earlier ones), each stage's seconds and test top-1, the final
    checkpoint and what was installed. With ``cfg.resume`` finished stages are skipped and interrupted ones
    continue from their last save.
    """
    from feature_nets.checkpoint import load_checkpoint
    from feature_nets.gfnet import build_small_gfnet
    from feature_nets.backbones.small_cnn import build_small_cnn
    from feature_nets.training import TrainConfig, copy_encoder_into, load_training_state, pretrain_encoder, \
        train_stage1, train_stage3
    from gfnet_env.data.cluttered_fashion_mnist import ClutteredFashionMNIST, FashionMNISTItems

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    last = STAGES.index(cfg.stop_after)
    report_path = out / "pipeline.json"
    report: dict[str, Any] = json.loads(report_path.read_text()) if (cfg.resume and report_path.exists()) else {}
    report.setdefault("commands", []).append(command if command is not None else repr(cfg))
    report.setdefault("stages", {})

    def save_report() -> None:
        atomic_write_text(report_path, json.dumps(report, indent=1))

    geometry = dict(canvas_size=TASK["canvas_size"], num_clutter=TASK["num_clutter"], root=cfg.data_root)
    train = ClutteredFashionMNIST("train", seed=cfg.seed, num_samples=cfg.train_samples, **geometry)
    val = ClutteredFashionMNIST("val", seed=cfg.seed, **geometry)
    test = ClutteredFashionMNIST("test", seed=0, num_samples=cfg.eval_samples, **geometry)  # the env's canvases

    torch.manual_seed(cfg.seed)
    model = build_small_gfnet(patch_size=TASK["patch_size"], T=TASK["T"], image_size=TASK["canvas_size"],
                              num_classes=TASK["num_classes"])
    stage1_ckpt = out / "cluttered_fmnist_gfnet_stage1.pth.tar"
    pre_path = out / "pretrained_encoder.pt"

    # 1. pretraining ------------------------------------------------------------------------------
    if cfg.resume and pre_path.exists():
        enc = build_small_cnn(**model.spec.encoder_kwargs)
        enc.load_official_state_dict(load_torch_file(pre_path, False, what="pretrained encoder", opt_in=None))
        copy_encoder_into(model, enc)
    else:
        t0 = time.time()
        enc = build_small_cnn(**model.spec.encoder_kwargs)
        hist = pretrain_encoder(enc, FashionMNISTItems("train", root=cfg.data_root), epochs=cfg.pretrain_epochs,
                                seed=cfg.seed, workers=cfg.workers,
                                val_dataset=FashionMNISTItems("val", root=cfg.data_root),
                                progress=cfg.progress, log=log, device="cpu")
        atomic_save({k: v.cpu() for k, v in enc.official_state_dict().items()}, pre_path)
        copy_encoder_into(model, enc)
        report["stages"]["pretrain"] = {"seconds": round(time.time() - t0, 1), "history": hist}
        save_report()
    if last == 0:
        return report

    # 2. stage 1 ----------------------------------------------------------------------------------
    if not (cfg.resume and stage1_ckpt.exists()):
        t0 = time.time()
        tcfg = TrainConfig.for_model(model, stage=1, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                                     workers=cfg.workers, progress=cfg.progress, device="cpu")
        res = train_stage1(model, train, val, tcfg, out / "stage1",
                           resume=cfg.resume and (out / "stage1" / "last.pth.tar").exists(),
                           force_settings=cfg.force_settings)
        seconds = time.time() - t0
        load_training_state(model, res.best_checkpoint)
        log(f"stage 1 done in {seconds / 60:.1f} min; evaluating on {len(test)} test canvases")
        ev = evaluate_default_task(model.eval(), test, seed=0)
        log(f"stage 1 test top-1: {json.dumps(ev)}")
        export_checkpoint(model, stage1_ckpt, anytime_classification=ev["random"], stage=1,
                          anytime_classification_note="test canvases (seed 0, epoch 0), "
                                                      "uniformly random patches (seed 0)",
                          test_top1=ev, train_config=tcfg.to_dict())
        report["stages"]["stage1"] = {"seconds": round(seconds, 1), "test": ev, "val_history": res.history,
                                      "checkpoint": str(stage1_ckpt)}
        save_report()
    if last == 1:
        return _finish(cfg, stage1_ckpt, report, save_report)

    # 3. stage 2 (the paper's PPO) ----------------------------------------------------------------
    from agents.paper_ppo import save_policy_into_checkpoint, train_paper_ppo

    stage2_ckpt = out / "cluttered_fmnist_gfnet_stage2.pth.tar"
    if not (cfg.resume and stage2_ckpt.exists()):
        t0 = time.time()
        agent = train_paper_ppo(ENV_ID, cfg.ppo_steps, out / "stage2", seed=cfg.seed, batch_size=cfg.ppo_batch_size,
                                resume=cfg.resume, force_settings=cfg.force_settings, device="cpu", progress=cfg.progress,
                                checkpoint=str(stage1_ckpt),
                                split="train", data_root=cfg.data_root)
        seconds = time.time() - t0
        save_policy_into_checkpoint(agent.policy.cpu(), stage1_ckpt, stage2_ckpt, stage=2)
        m2 = load_checkpoint(stage2_ckpt).model
        ev = evaluate_default_task(m2, test, modes=("random", "centre", "item", "policy"), seed=0)
        log(f"stage 2 done in {seconds / 60:.1f} min; test top-1: {json.dumps(ev)}")
        # the policy's own numbers in the checkpoint (as the released files store theirs): the benchmark's check
        stored = store_results(stage2_ckpt, eval_samples=cfg.eval_samples, data_root=cfg.data_root)
        report["stages"]["stage2"] = {"seconds": round(seconds, 1), "test": ev, "checkpoint": str(stage2_ckpt),
                                      "stored_results": stored}
        save_report()
    if last == 2:
        return _finish(cfg, stage2_ckpt, report, save_report)

    # 4. stage 3 ----------------------------------------------------------------------------------
    stage3_ckpt = out / "cluttered_fmnist_gfnet_stage3.pth.tar"
    if not (cfg.resume and stage3_ckpt.exists()):
        t0 = time.time()
        model = load_checkpoint(stage2_ckpt).model
        tcfg3 = TrainConfig.for_model(model, stage=3, epochs=cfg.stage3_epochs, batch_size=cfg.batch_size,
                                      seed=cfg.seed, workers=cfg.workers, progress=cfg.progress, device="cpu")
        res = train_stage3(model, train, val, tcfg3, out / "stage3",
                           resume=cfg.resume and (out / "stage3" / "last.pth.tar").exists(),
                           force_settings=cfg.force_settings)
        seconds = time.time() - t0
        load_training_state(model, res.best_checkpoint)
        ev = evaluate_default_task(model.eval(), test, modes=("random", "centre", "item", "policy"), seed=0)
        log(f"stage 3 done in {seconds / 60:.1f} min; test top-1: {json.dumps(ev)}")
        export_checkpoint(model, stage3_ckpt, stage=3, test_top1=ev, train_config=tcfg3.to_dict())
        stored = store_results(stage3_ckpt, eval_samples=cfg.eval_samples, data_root=cfg.data_root)
        report["stages"]["stage3"] = {"seconds": round(seconds, 1), "test": ev, "val_history": res.history,
                                      "checkpoint": str(stage3_ckpt), "stored_results": stored}
        save_report()
    final = out / "cluttered_fmnist_gfnet.pth.tar"
    shutil.copyfile(stage3_ckpt if cfg.ship == "stage3" else stage2_ckpt, final)
    report["shipped_stage"] = cfg.ship
    if last == 3:
        return _finish(cfg, final, report, save_report)

    # 5. an SB3 PPO agent on the shipped networks ---------------------------------------------------
    from agents.sb3.agent import train_sb3

    t0 = time.time()
    train_sb3("ppo", ENV_ID, cfg.sb3_steps, out / "sb3_ppo", seed=cfg.seed, device="cpu", resume=cfg.resume,
              force_settings=cfg.force_settings,
              progress_bar=cfg.progress, checkpoint=str(final), split="train", data_root=cfg.data_root,
              eval_episodes=200)  # the ppo recipe of agents/sb3/recipes.py
    report["stages"]["sb3"] = {"seconds": round(time.time() - t0, 1), "agent": str(out / "sb3_ppo")}
    save_report()
    return _finish(cfg, final, report, save_report)


def _finish(cfg: PipelineConfig, final: Path, report: dict, save_report) -> dict[str, Any]:
    """Record the final checkpoint and the total time; with ``cfg.install`` copy the shipped files into
    ``gfnet_env/weights/``."""
    report["final_checkpoint"] = str(final)
    report["total_seconds"] = round(sum(s.get("seconds", 0) for s in report["stages"].values()), 1)
    if cfg.install:
        from gfnet_env.tasks import DEFAULT_FMNIST_CHECKPOINT

        DEFAULT_FMNIST_CHECKPOINT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(final, DEFAULT_FMNIST_CHECKPOINT)
        report["installed"] = [str(DEFAULT_FMNIST_CHECKPOINT)]
        log(f"installed {final} as {DEFAULT_FMNIST_CHECKPOINT}")
        agent_zip = Path(cfg.out) / "sb3_ppo" / "sb3_ppo.zip"
        if "sb3" in report["stages"] and agent_zip.exists():
            from agents.sb3.agent import SHIPPED_AGENTS
            from agents.sb3.files import export_for_inference

            target = DEFAULT_FMNIST_CHECKPOINT.parent / SHIPPED_AGENTS[(ENV_ID, "sb3-ppo")]
            export_for_inference(agent_zip, target)  # without Adam's moments: a third of the size
            report["installed"].append(str(target))
            log(f"installed {agent_zip} as {target}")
    save_report()
    log(f"done: {final} (stage times: " + ", ".join(f"{k} {v.get('seconds', 0) / 60:.1f} min"
                                                   for k, v in report["stages"].items()) + ")")
    return report

