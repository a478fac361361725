"""Continual classifiers on a frozen encoder: nearest class mean (``ncm``) and RanPAC (``ranpac``).

Both learn only statistics that add up over experiences (per-model sums of embeddings; a Gram matrix and
class sums of random features), so learning experience by experience gives exactly the classifier that
joint training on everything seen so far would give: nothing is forgotten by construction. They are the
bar every trained router should clear (SimpleCIL, Zhou et al. 2024; RanPAC, McDonald et al. 2023).
"""
