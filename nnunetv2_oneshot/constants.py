"""Names of the one-shot dataset format (documented in README, "Dataset format").

A one-shot dataset is a standard nnU-Net raw dataset (``imagesTr``/``labelsTr`` hold the 1..k labelled
cases, the first of which is the atlas) plus one extra folder of unlabelled images.
"""

#: unlabelled images, named like imagesTr: ``{case}_{channel:04d}{file_ending}``
UNLABELLED_FOLDER = "imagesUnlabelled"
#: true labels of the unlabelled pool; read ONLY by the fully supervised upper-bound baseline
ORACLE_LABELS_FOLDER = "labelsUnlabelledOracle"
#: key in dataset.json with our extra metadata (optional for user datasets)
DATASET_JSON_KEY = "oneshot"
#: suffix of the sibling of nnU-Net's preprocessed data folder that holds the preprocessed unlabelled images
UNLABELLED_PREPROCESSED_SUFFIX = "_unlabelled"
#: marker file written into datasets this package generated, so that --overwrite may only replace our own
GENERATED_MARKER = ".generated_by_nnunetv2_oneshot"

#: default dataset ids of the embedded datasets
BRAIN_DATASET_ID = 990
CT_DATASET_ID = 991
IXI_DATASET_ID = 992

#: validation split of a dataset that has one (IXI): the labelled scans every development decision is taken on,
#: beside imagesTs/labelsTs (test: reported figures only). No trainer reads them.
VALIDATION_IMAGES = "imagesVal"
VALIDATION_LABELS = "labelsVal"
