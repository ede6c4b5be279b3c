"""Names of the files each stage writes into its output folder.

One place for them, so the report (which reads every stage's folder) and the stages (which
write them) import names, not each other.
"""

SCAN_CSV = "scan.csv"  # scan: one row per image (audit.scan.SCAN_COLUMNS)
RUN_JSON = "run.json"  # scan: settings, versions, timings
CLEANING_CSV = "cleaning.csv"  # clean: one row per image (audit.clean.CLEANING_COLUMNS)
CLEAN_STATE = ".xraydebug-clean.json"  # clean: settings; a rerun with the same ones resumes
TEXT_CSV = "text.csv"  # text: one row per image (text.dataset.TEXT_COLUMNS)
TEXT_STATE = ".xraydebug-text.json"  # text: settings; a rerun with the same ones resumes
BEFORE_AFTER = "before_after.json"  # retrain: the comparison
EXAMPLES_FILE = "text_sensitivity_examples.png"  # text sensitivity: contact sheet
