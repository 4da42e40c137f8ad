"""Tasks: what each env id stands for — one registered :class:`Task` per env id.

A task holds its networks and images (``loader`` and the task kwargs it accepts), its splits (evaluation,
threshold fitting, validation, training) and its training data for ``gfnet train-features``.
:func:`register_task` makes a new env id work everywhere (``gym.make``, the benchmark, the trainers, the CLI);
the built-in ones are :mod:`~gfnet_env.tasks.imagenet` and :mod:`~gfnet_env.tasks.cluttered_fashion_mnist`.
See docs/architecture.md, "Add a task".
"""

from __future__ import annotations

from . import cluttered_fashion_mnist, imagenet
from .cluttered_fashion_mnist import DEFAULT_FMNIST_CHECKPOINT, WEIGHTS_DIR, cluttered_fashion_mnist_task
from .image_folder import image_folder_split, image_folder_training_sets
from .imagenet import IMAGENET_HELP, imagenet_task
from .registry import get_task, register_task, registered_tasks, unregister_task
from .task import Task, TrainingOptions, class_names_of, load_model

__all__ = [
    "DEFAULT_FMNIST_CHECKPOINT",
    "IMAGENET_HELP",
    "Task",
    "TrainingOptions",
    "WEIGHTS_DIR",
    "class_names_of",
    "cluttered_fashion_mnist_task",
    "get_task",
    "image_folder_split",
    "image_folder_training_sets",
    "imagenet_task",
    "load_model",
    "register_task",
    "registered_tasks",
    "unregister_task",
]

for _task in (imagenet.TASK, cluttered_fashion_mnist.TASK):
    register_task(_task)
