"""Hand joint recognition: data, augmentation, models, training, prediction, submission.

Data flows one way: files -> lib.data -> lib.augment -> lib.train (lib.models) -> lib.predict
-> lib.ensemble -> lib.submit. Lower layers never import higher ones.
"""
