"""The inner loop: adapt tasks on their support sets and compute their query logits, one package.

=================== ==========================================================================================
module              what
=================== ==========================================================================================
``spec``            :class:`InnerLoop` (the caller's settings), the loss convention (:func:`mean_loss_lr`),
                    :class:`Plan` (the settings resolved once per batch) and the :class:`InnerPath` protocol
``trainable``       which parameters adapt (:func:`resolve_trainable`, :func:`freeze_layers`, predicates)
``dispatch``        the one place a path is chosen; the API below
``unadapted``       path: nothing adapts
``head_only``       path: only the head adapts, all tasks at once on fixed body features
``folded``          path: every task at once, tasks folded into channels (Conv4)
``conv4_episode``   path: one Conv4 episode without autograd (evaluation on CPU)
``generic``         path: one episode at a time with autograd on any module (:func:`adapt`, the reference)
``tasks``           a batch of tasks through one network (:func:`task_features`)
``aten_kernels``    the private ATen kernels of ``conv4_episode``'s hand-written backward, in one place
=================== ==========================================================================================

The API training, :mod:`repana.meta.evaluate` and :mod:`repana.analysis` call::

    query_logits_by_part(model, params, support_x, support_y, query_x, spec) -> Iterator[(slice, logits)]
    adapted_query_logits(model, params, support_x, support_y, query_x, spec) -> logits
    adapt_tasks(model, params, support_x, support_y, spec) -> list[dict]       # per task, detached
    adapt_trajectory(model, params, support_x, support_y, spec) -> list[dict]  # steps + 1 dicts, detached
    adapt(model, params, support_x, support_y, steps, lr, trainable=None, first_order=False,
          inner_loss="mean") -> dict                                          # one episode, the generic path

with ``spec = InnerLoop(steps, lr, trainable=None, first_order=False, inner_loss="mean",
bn_support_query="apart", fold=None)``.
"""

from repana.meta.inner.dispatch import (adapt_tasks, adapt_trajectory, adapted_query_logits, choose_path,
                                        query_logits_by_part)
from repana.meta.inner.generic import adapt
from repana.meta.inner.spec import (INNER_LOSSES, InnerLoop, InnerPath, Plan, mean_loss_lr, normalise_inner_loss,
                                    resolve_plan)
from repana.meta.inner.tasks import task_features
from repana.meta.inner.trainable import (Trainable, all_parameters, body_parameters, freeze_layers, head_parameters,
                                         resolve_trainable, trainable_predicate, without_batch_norm)

__all__ = ["InnerLoop", "Plan", "InnerPath", "resolve_plan", "INNER_LOSSES", "normalise_inner_loss", "mean_loss_lr",
           "query_logits_by_part", "adapted_query_logits", "adapt_tasks", "adapt_trajectory", "choose_path", "adapt",
           "task_features", "Trainable", "resolve_trainable", "freeze_layers", "trainable_predicate",
           "all_parameters", "head_parameters", "body_parameters", "without_batch_norm"]
