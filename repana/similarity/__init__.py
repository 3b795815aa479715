"""Similarity of neural representations: CCA, SVCCA, PWCCA, CKA (linear, RBF, debiased), Procrustes.

All measures take ``X: (n_datapoints, n_features_x)`` and ``Y: (n_datapoints, n_features_y)``: numpy arrays
or torch tensors (float16, bfloat16, float32, float64 or integers; CPU or CUDA), nested lists or pandas
DataFrames. They cast the inputs to float64 on the input's device *before* any check or centring (other types
-- strings, objects, complex, booleans, ragged lists -- get an ``InputError`` naming the type), rescale
magnitudes beyond ``2**+-64`` by a power of two (data scaled by 1e200 gives the unit-scale value), and return
Python floats. See docs/similarity.md.
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

#: The Procrustes similarity under the name of its measure, like ``cka`` and ``svcca``. It takes the place of
#: the submodule's attribute here; ``from repana.similarity.procrustes import procrustes_similarity`` still
#: imports from the module.
procrustes = procrustes_similarity

__all__ = [
    "cca", "svcca", "pwcca", "cka", "procrustes", "procrustes_similarity", "procrustes_distance",
    "similarity", "list_measures", "register_measure", "get_measure", "Measure",
    "reduce_conv", "reduce_activations", "REDUCTIONS", "SEQUENCE_REDUCTIONS", "LAYOUTS",
    "bootstrap_ci", "permutation_test", "null_baseline",
    "StreamingLinearCKA", "MinibatchCKA",
    "CCAResult", "BootstrapResult", "PermutationResult", "NullBaseline",
    "Representation", "RepanaWarning", "chance_level",
]
