"""Analyses over finished runs and the report a clinician reads.

- :mod:`.text_sensitivity`: does the model react to pasted text (against placebo pastes)?
- :mod:`.retrain`: retrain on the cleaned data and compare before/after on the same films.
- :mod:`.report` (with :mod:`.figures`): the self-contained HTML audit report of any run folder.
"""
