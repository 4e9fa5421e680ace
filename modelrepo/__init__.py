"""The model repository contract, shared by training and serving and importing neither.

Layout and name rules (:mod:`modelrepo.layout`), the signature (:mod:`modelrepo.signature`), the
manifest (:mod:`modelrepo.manifest`), vocabularies (:mod:`modelrepo.vocabulary`), feature tables
(:mod:`modelrepo.tables`), the users' training histories (:mod:`modelrepo.history`), the
retrieval vectors (:mod:`modelrepo.retrieval`) and the only code that reads or writes a version
directory (:mod:`modelrepo.version`).
"""

from modelrepo.errors import VersionError
from modelrepo.history import History, parse_history
from modelrepo.layout import (
    CONFIG_FILE,
    HISTORY_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    RETRIEVAL_FILE,
    UNKNOWN_ROW,
    ModelDir,
    is_model_name,
    list_versions,
    parse_version,
    scan,
    stamp_file,
    stamp_version,
)
from modelrepo.manifest import FORMAT_VERSION, Manifest
from modelrepo.retrieval import RetrievalVectors, parse_retrieval
from modelrepo.signature import InputSpec, OutputSpec, Role, Signature, Source, two_id_signature
from modelrepo.tables import ITEM_FEATURES_FILE, USER_FEATURES_FILE, table_type, value_fault
from modelrepo.version import (
    PublishedVersion,
    StoredVersion,
    read_manifest,
    read_version,
    write_version,
)
from modelrepo.vocabulary import Vocabulary

__all__ = [
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "HISTORY_FILE",
    "ITEM_FEATURES_FILE",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "RETRIEVAL_FILE",
    "UNKNOWN_ROW",
    "USER_FEATURES_FILE",
    "History",
    "InputSpec",
    "Manifest",
    "ModelDir",
    "OutputSpec",
    "PublishedVersion",
    "RetrievalVectors",
    "Role",
    "Signature",
    "Source",
    "StoredVersion",
    "VersionError",
    "Vocabulary",
    "is_model_name",
    "list_versions",
    "parse_history",
    "parse_retrieval",
    "parse_version",
    "read_manifest",
    "read_version",
    "scan",
    "stamp_file",
    "stamp_version",
    "table_type",
    "two_id_signature",
    "value_fault",
    "write_version",
]
