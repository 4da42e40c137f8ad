"""Train an agent (the paper's PPO or a Stable-Baselines3 algorithm) on a GFNet env.

Writes to --out: TensorBoard logs (tensorboard/), resumable checkpoints, the final agent and agent.json, which
`gfnet benchmark --agent-dir NAME=DIR` and `gfnet show` read. Images come from the env's train split unless
--env-kwarg split=... says otherwise.

--out is locked for the run (one writer per folder: a second run on it is refused). A folder that holds a run
(finished: agent.json; or interrupted: the UNFINISHED marker) is never started over: --resume continues it,
--overwrite replaces it (its files are deleted once the new run's inputs are checked). The UNFINISHED marker is
written only once the inputs are checked, so bad input never spoils a finished folder.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ._common import (
    add_env_kwarg,
    add_import,
    import_user_modules,
    parse_env_kwargs,
    parse_pairs,
    parse_value,
    raw_formatter,
)
from .benchmark import add_trust_agent

EXAMPLE = """  gfnet train-agent --agent sb3-ppo --env GFNet-ClutteredFashionMNIST-v0 --out runs/sb3_ppo
  gfnet train-agent --agent sb3-dqn --env GFNet-ClutteredFashionMNIST-v0 --steps 50000 \\
      --hparams learning_rate=1e-4 --hparams gamma=0.99 --seeds 3 --out runs/sb3_dqn
  gfnet train-agent --agent paper-ppo --env GFNet-ImageNet-v0 \\
      --env-kwarg checkpoint=resnet50_patch_size_96_T5.pth.tar \\
      --env-kwarg data_root=/data/imagenet --steps 1000000 --out runs/paper_ppo --resume
  gfnet train-agent --agent paper-ppo-stop --env GFNet-ClutteredFashionMNIST-v0 --env-kwarg step_cost=1e-8 \\
      --steps 440000 --out runs/ppo_stop          # decides when to stop; a look costs step_cost per multiply-add
  gfnet train-agent --agent sb3-ppo --env GFNet-ClutteredFashionMNIST-v0 --env-kwarg stop_action=true \\
      --env-kwarg step_cost=1e-8 --out runs/sb3_ppo_stop
  gfnet train-agent --import my_agents.py --agent my-trainable-agent --env GFNet-ClutteredFashionMNIST-v0 \\
      --steps 100000 --out runs/mine
  tensorboard --logdir runs/"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    raw_formatter(parser, __doc__, EXAMPLE)
    parser.add_argument("--agent", required=True, help="paper-ppo, paper-ppo-stop, sb3-ppo, sb3-sac, sb3-a2c, sb3-td3, sb3-dqn, "
                                                      "sb3-recurrent-ppo (or any registered trainable agent)")
    parser.add_argument("--env", required=True, help="env id, e.g. GFNet-ClutteredFashionMNIST-v0 or GFNet-ImageNet-v0")
    add_env_kwarg(parser)
    add_import(parser)
    parser.add_argument("--steps", type=int, default=None,
                        help="env steps to train for (in total, when resuming); SB3 agents: default the recipe's")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, image order and exploration")
    parser.add_argument("--seeds", type=int, default=1,
                        help="train N independent copies with seeds SEED..SEED+N-1, each in OUT/seed_<s>/ "
                             "(the benchmark evaluates every copy of --agent-dir NAME=OUT); default 1: OUT itself")
    parser.add_argument("--out", required=True, help="output folder (created)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    again.add_argument("--overwrite", action="store_true",
                       help="replace the run that --out holds (finished or not): its files are deleted once the "
                            "new run's inputs are checked (without --resume or --overwrite such a folder is refused)")
    parser.add_argument("--force-settings", action="store_true",
                        help="with --resume: accept settings that differ from the saved run's (applied from here on and "
                             "recorded); without it such a resume is refused, naming the differences")
    parser.add_argument("--device", default="auto", help="torch device (default: CUDA when available)")
    sb3 = parser.add_argument_group("SB3 agents")
    sb3.add_argument("--n-envs", type=int, default=None, help="episodes stepped as one batch (default: the recipe's)")
    sb3.add_argument("--obs-mode", default=None, choices=["gru", "feature_map", "dict"],
                     help="observation (default: the recipe's, feature_map)")
    sb3.add_argument("--action-mode", default=None, choices=["continuous", "grid"],
                     help="action (default: the recipe's: grid for ppo/a2c/recurrent-ppo/dqn, continuous for sac/td3)")
    sb3.add_argument("--grid-size", type=int, default=None, help="G of grid actions (default: the recipe's, 7)")
    sb3.add_argument("--hparams", action="append", default=[], metavar="KEY=VALUE",
                     help="override a value of the agent's recipe (agents/sb3/recipes.py, docs/sb3.md), repeatable: "
                          "learning_rate=1e-4, gamma=0.99, n_steps=32, buffer_size=50000, extractor=none, "
                          "net_arch=[64,64], ...; values are parsed as Python literals when possible")
    sb3.add_argument("--save-replay-buffer", action="store_true",
                     help="off-policy: save the replay buffer with each checkpoint (only the newest is kept), so "
                          "--resume continues with it; off by default (a buffer is 100s of MB)")
    sb3.add_argument("--keep-replay-buffers", default=None, choices=["latest", "all", "none"],
                     help="finer control than --save-replay-buffer: keep the newest buffer, every one, or none")
    sb3.add_argument("--keep-checkpoints", type=int, default=2,
                     help="model checkpoints kept in OUT/checkpoints (the newest K; default 2); OUT/best keeps the "
                          "best evaluated model")
    sb3.add_argument("--eval-episodes", type=int, default=100, help="episodes per held-out evaluation")
    ppo = parser.add_argument_group("paper-ppo")
    ppo.add_argument("--batch-size", type=int, default=64, help="images per PPO update (default 64)")
    ppo.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (default 3e-4)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_trust_agent(parser)  # --resume of an SB3 agent reads its checkpoint


def run(args: argparse.Namespace) -> int:
    import_user_modules(args.imports)  # before any agent lookup: the user's code registers its agents
    import agents
    from agents.registry import factory_of
    from feature_nets.folders import OutputFolder

    env_kwargs = parse_env_kwargs(args.env_kwarg)
    try:
        factory = factory_of(args.agent)
    except KeyError as e:
        print(f"gfnet train-agent: {e.args[0]}")
        return 2
    if not getattr(factory, "trainable", False):
        trainable = [n for n in agents.available() if agents.is_trainable(n)]
        print(f"gfnet train-agent: {args.agent!r} does not learn; trainable agents: {', '.join(trainable)}")
        return 2
    # every CLI training option; each agent's train_options hook picks the ones its learn() takes
    options = {"device": args.device, "progress": not args.no_progress, "n_envs": args.n_envs,
               "obs_mode": args.obs_mode, "action_mode": args.action_mode, "grid_size": args.grid_size,
               "eval_episodes": args.eval_episodes, "batch_size": args.batch_size, "lr": args.lr,
               "trust_agent": args.trust_agent, "force_settings": args.force_settings,
               "hparams": {k: parse_value(v) for k, v in parse_pairs(args.hparams, "--hparams")} or None,
               "keep_replay_buffers": args.keep_replay_buffers or ("latest" if args.save_replay_buffer else "none"),
               "keep_checkpoints": args.keep_checkpoints}
    if args.steps is None and not args.agent.startswith("sb3-"):
        print("gfnet train-agent: --steps is required (only sb3-* agents have a recipe default)")
        return 2
    seeds = [args.seed + k for k in range(args.seeds)]
    outs = [Path(args.out) if args.seeds == 1 else Path(args.out) / f"seed_{seed}" for seed in seeds]
    fresh = [not out.exists() for out in outs]  # before the lock creates --out
    with OutputFolder(args.out, "train-agent").claim():  # one writer per folder, before any work
        _refuse_existing_runs(args, outs)
        for seed, out, new_folder in zip(seeds, outs, fresh):
            agent = _train_one(factory, args, options, env_kwargs, seed, out, new_folder)
            print(f"trained {agent.name} (seed {seed}) saved in {out}")
    print(f"TensorBoard: tensorboard --logdir {args.out}")
    return 0


def _refuse_existing_runs(args: argparse.Namespace, outs: list[Path]) -> None:
    """A folder that holds a run is continued (--resume) or replaced (--overwrite), never started over."""
    from agents.trained import AGENT_JSON, UNFINISHED, run_state

    if args.resume or args.overwrite:
        return
    for out in outs:
        state = run_state(out)
        if state == "finished":
            raise ValueError(f"--out {out} holds a finished run ({AGENT_JSON}); continue it with --resume, replace "
                             "it with --overwrite, or choose another --out")
        if state == "unfinished":
            raise ValueError(f"--out {out} holds an unfinished run ({UNFINISHED} marker); continue it with --resume, "
                             "replace it with --overwrite, or choose another --out")


def _train_one(factory, args: argparse.Namespace, options: dict, env_kwargs: dict, seed: int, out: Path,
               fresh: bool):
    """One seed's run into ``out``: the UNFINISHED marker once the inputs are checked (the trainer's ``on_start``),
    removed when the agent is saved; a run refused before its first write leaves the folder as it was."""
    from agents.trained import UNFINISHED, clear_run, mark_finished, mark_unfinished, run_state
    from feature_nets.folders import LOCK_FILE

    state = run_state(out)
    started = []

    def on_start() -> None:
        if started:
            return
        started.append(True)
        if args.overwrite and state != "new":
            clear_run(out, inputs=[*env_kwargs.values(), *args.imports])  # its checkpoints are never resumed
        if not (args.resume and state == "finished"):  # a finished agent continued stays usable meanwhile
            # an interrupted run leaves the marker: the benchmark refuses the folder and says how to resume it
            mark_unfinished(out, f"Resume it with the same command and --resume (seed {seed}, --out {args.out}).")

    train_options = factory.train_options({**options, "on_start": on_start})
    if train_options.get("on_start") is not on_start:
        on_start()  # an agent that does not take the hook: marked before it starts
    try:
        agent = factory.learn(args.env, args.steps, seed, str(out), resume=args.resume,
                              **{**train_options, **env_kwargs})
    except BaseException:
        if state == "new" and out.is_dir() and {p.name for p in out.iterdir()} <= {UNFINISHED, LOCK_FILE}:
            (out / UNFINISHED).unlink(missing_ok=True)  # refused before any work: leave the folder as it was
            if fresh and not (out / LOCK_FILE).exists():
                shutil.rmtree(out, ignore_errors=True)  # a new seed folder (--out itself goes with its lock)
        raise
    mark_finished(out)
    return agent
