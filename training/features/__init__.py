"""Side features for training: reading feature files (:mod:`training.features.files`, formats in
:mod:`training.features.formats`) and encoding them into the tables a version ships
(:mod:`training.features.encode`)."""

from training.features.encode import EncodedFeature, EncodedTable, encode_table
from training.features.files import FeatureColumn, FeatureFile, read_feature_file
from training.features.kinds import FeatureFileError, FeatureKind

__all__ = [
    "EncodedFeature",
    "EncodedTable",
    "FeatureColumn",
    "FeatureFile",
    "FeatureFileError",
    "FeatureKind",
    "encode_table",
    "read_feature_file",
]
