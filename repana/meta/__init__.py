"""Meta-learning: the functional inner loop, the algorithms, evaluation (and the trainer, checkpoints).

    from repana.meta import adapt, get_algorithm, evaluate, predict
"""

from repana.meta.inner import adapt, resolve_trainable
from repana.meta.algorithms import Algorithm, get_algorithm, list_algorithms
from repana.meta.evaluate import EvaluationResult, evaluate, predict
from repana.meta.nil import nil_logits, nil_predict

__all__ = ["adapt", "resolve_trainable", "Algorithm", "get_algorithm", "list_algorithms", "EvaluationResult",
           "evaluate", "predict", "nil_logits", "nil_predict"]
