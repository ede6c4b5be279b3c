"""The per-image stages: each one declaration on the one driver (:mod:`.driver`).

- :mod:`.scan`: classify, explain (iGOS++), detect text and flag shortcuts -> ``scan.csv``;
- :mod:`.text`: text detection alone -> ``text.csv`` (also the text-sensitivity test's pass);
- :mod:`.clean`: inpaint the text into a new dataset -> ``cleaning.csv``.

Stages never build the audit report: the caller does (:func:`xraydebug.audit.report.build_report`).
"""
