"""Hand joint recognition: data, augmentation, models, training, prediction, submission.

Data flows one way: files -> lib.data -> lib.augment -> lib.train (lib.models) -> lib.predict
-> lib.ensemble -> lib.submit. Lower layers never import higher ones.
"""
import os

# albumentations asks PyPI for its latest version when imported (a network call, and a warning
# when offline); its documented opt-out, set before any lib module can import it
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
