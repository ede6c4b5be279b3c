"""Analyses over finished runs and the report a clinician reads.

- :mod:`.text_sensitivity`: does the model react to pasted text (against placebo pastes)?
- :mod:`.retrain`: retrain on the cleaned data and compare before/after on the same films, from
  :mod:`.compare` (before/after metrics with paired CIs), :mod:`.shortcut_check` (calls with and
  without detected text: did a text shortcut survive?) and :mod:`.finetune` (fine-tuning an
  imported baseline).
- :mod:`.report` (with :mod:`.figures`): the self-contained HTML audit report of any run folder.
"""
