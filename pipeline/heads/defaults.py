"""The heads' hyperparameter defaults, in one torch-free place: each estimator's `__init__`
and the settings of pipeline/config.py (flags, sweeps, config files) read them from here.
FCa's 2048 units and dropout 0.5 are the paper's (section 3.2); the SGD settings are common
defaults, not the paper's; the weak head's are argued in docs/weak-supervision.md."""

HIDDEN = 2048  # FCa units
DROPOUT = 0.5  # after FCa
LR = 0.01  # SGD learning rate, decayed along a cosine
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
EPOCHS = 20  # the MLP's and the weak head's
BATCH_SIZE = 256  # patches per MLP step
SVM_C = 1.0  # the linear SVMs' regularisation
SVM_EPOCHS = 10  # the patch SVM's SGD epochs
POOL = "mean-pk"  # the weak head's pooling: it won a cross-validated sweep of the four
LSE_R = 5.0  # lse's sharpness: a middle one
TOP_FRACTION = 0.1  # topk's share at the top (WILDCAT)
BOTTOM_FRACTION = 0.0  # topk's share at the bottom: off
BOTTOM_WEIGHT = 0.7  # topk's bottom term's weight (WILDCAT)
BATCH_IMAGES = 16  # images per weak-head step
K = 5.0  # the pooling power: mean of p^k (paper section 4)
SEED = 0
