"""Continual-learning strategies for the trainable router, each a registered ``cmrbench`` router.

naive (sequential fine-tuning), replay-10 / replay-20 (random replay), cumulative, joint, ewc (online
EWC), lwf (Learning without Forgetting), merge-avg / merge-ties / merge-dare (model merging).
"""
