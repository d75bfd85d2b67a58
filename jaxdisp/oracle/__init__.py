"""The oracle: who answers a round's queries.

* :mod:`~jaxdisp.oracle.simulated` (``oracle.kind='simulated'``): the dataset's labels, with
  ``oracle.noise`` annotator mistakes.
* The human oracle (``oracle.kind='files'``): a round that selects samples writes
  ``queries/round_<r>.csv`` (:mod:`~jaxdisp.oracle.queries`) and the run stops. Answers are
  imported with ``python -m jaxdisp.label import --workdir W --file F``
  (:mod:`~jaxdisp.oracle.cli`), which validates the whole file first
  (:mod:`~jaxdisp.oracle.answers`) and then appends the new labels to ``labels.jsonl``
  (:mod:`~jaxdisp.oracle.ledger`) -- a file is applied completely or not at all, and a re-import
  of the same answers is a no-op. The next run trains on the ledger's labels for every queried
  sample.
"""

from jaxdisp.oracle.answers import Context, context_from_workdir, read_answers, validate_answers
from jaxdisp.oracle.ledger import (LEDGER, append_ledger, ledger_path, missing_labels,
                                   read_ledger, repair_tail, training_labels)
from jaxdisp.oracle.queries import QUERY_COLUMNS, csv_cell, how_to_continue, write_queries
from jaxdisp.oracle.simulated import noisy_answers, simulated_answers

__all__ = ['Context', 'LEDGER', 'QUERY_COLUMNS', 'append_ledger', 'context_from_workdir',
           'csv_cell', 'how_to_continue', 'ledger_path', 'missing_labels', 'noisy_answers',
           'read_answers',
           'read_ledger', 'repair_tail', 'simulated_answers', 'training_labels', 'validate_answers',
           'write_queries']
