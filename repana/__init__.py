"""repana: representation analysis for deep learning.

Sub-packages:
    repana.similarity  measures on activations (CCA, SVCCA, PWCCA, CKA, Procrustes, stats)
    repana.capture     activations of named submodules through forward hooks
    repana.compare     layer-by-layer comparison of two models as a tidy DataFrame
    repana.data        few-shot datasets (Omniglot, MiniImageNet, glyphs) and episodes
    repana.models      the paper's Conv4 backbones
    repana.meta        MAML / FOMAML / ANIL / Reptile / baselines, training and evaluation
    repana.analysis    the analyses of "Rapid Learning or Feature Reuse?" (Raghu et al. 2020)
    repana.plots       figures from the analyses' DataFrames
"""

__version__ = "0.1.0"
