"""Adopting a deployed model medunlearn did not train: a MONAI bundle, a TorchScript file or a state dict.

resolver (static, allow-listed reading of a bundle config: nothing in it is ever run), argspec (typed
argument lists per allowed target), networks (MONAI nets as medunlearn Classifiers + key map),
preprocessing (the bundle's pipeline decomposed into loader steps + the model's intensity slot),
fidelity (adopted model vs the bundle's own pipeline), membership (datalist -> cohort rows),
source (SRC -> adopted model in memory).
"""
