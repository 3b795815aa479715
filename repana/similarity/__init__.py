"""Similarity of neural representations: CCA, SVCCA, PWCCA, CKA (linear, RBF, debiased), Procrustes.

All measures take ``X: (n_datapoints, n_features_x)`` and ``Y: (n_datapoints, n_features_y)``, numpy arrays
or torch tensors (any float dtype, CPU or CUDA). They validate the inputs, cast them to float64 on the
input's device *before* centring, and return Python floats. See docs/similarity.md.
"""

from repana.similarity._arrays import RepanaWarning
from repana.similarity.cca import CCAResult, cca, pwcca, svcca
from repana.similarity.cka import chance_level, cka
from repana.similarity.conv import LAYOUTS, REDUCTIONS, SEQUENCE_REDUCTIONS, reduce_activations, reduce_conv
from repana.similarity.procrustes import procrustes_distance, procrustes_similarity
from repana.similarity.registry import Measure, get_measure, list_measures, register_measure, similarity
from repana.similarity.representation import Representation
from repana.similarity.stats import (BootstrapResult, NullBaseline, PermutationResult, bootstrap_ci,
                                     null_baseline, permutation_test)
from repana.similarity.streaming import MinibatchCKA, StreamingLinearCKA

__all__ = [
    "cca", "svcca", "pwcca", "cka", "procrustes_similarity", "procrustes_distance",
    "similarity", "list_measures", "register_measure", "get_measure", "Measure",
    "reduce_conv", "reduce_activations", "REDUCTIONS", "SEQUENCE_REDUCTIONS", "LAYOUTS",
    "bootstrap_ci", "permutation_test", "null_baseline",
    "StreamingLinearCKA", "MinibatchCKA",
    "CCAResult", "BootstrapResult", "PermutationResult", "NullBaseline",
    "Representation", "RepanaWarning", "chance_level",
]
